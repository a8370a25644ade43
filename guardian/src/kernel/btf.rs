//! Just enough of a BTF reader to find where a field sits in a kernel struct,
//! from /sys/kernel/btf/vmlinux. Rust eBPF has no CO-RE, so the programs are
//! handed the offsets they need (`task_struct.files`, `file.f_op`, ...) as
//! globals instead of compiling in a layout that differs between kernels.
//! (aya 0.14 parses BTF but keeps member lookups crate-private.)

#![forbid(unsafe_code)]

use std::{fs, io};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ARRAY: u32 = 3;
const KIND_FUNC: u32 = 12;
const TYPE_HEADER: usize = 12;
/// Kinds that only qualify or rename another type: TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG.
const WRAPPERS: [u32; 5] = [8, 9, 10, 11, 18];
/// Anonymous struct and union nesting followed when looking for a member.
const MAX_ANONYMOUS_DEPTH: usize = 4;

/// The kernel's BTF, indexed by type id.
pub struct Btf {
    data: Vec<u8>,
    strings: usize,
    /// Byte position of each type's header; type id N is `types[N - 1]`.
    types: Vec<usize>,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> io::Result<Self> {
        Self::parse(fs::read(VMLINUX)?)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed kernel BTF"))
    }

    fn parse(data: Vec<u8>) -> Option<Self> {
        let mut btf = Self {
            data,
            strings: 0,
            types: Vec::new(),
        };
        if btf.u16_at(0)? != MAGIC {
            return None;
        }
        let header_len = btf.u32_at(4)? as usize;
        let (type_off, type_len) = (btf.u32_at(8)? as usize, btf.u32_at(12)? as usize);
        btf.strings = header_len + btf.u32_at(16)? as usize;
        let start = header_len + type_off;
        let mut at = start;
        while at < start + type_len {
            btf.types.push(at);
            let (kind, vlen, _) = btf.info(at)?;
            at += TYPE_HEADER + extra_bytes(kind, vlen)?;
        }
        Some(btf)
    }

    /// Byte offset of a member path (`["thread_info", "status"]`) in `struct name`.
    pub fn offset(&self, name: &str, path: &[&str]) -> io::Result<u32> {
        self.find(name, path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("BTF has no struct {name} with member {}", path.join(".")),
            )
        })
    }

    /// The type id of function `name` (a kfunc's id, for a call to it).
    pub fn function(&self, name: &str) -> Option<u32> {
        let index = self.types.iter().position(|&at| {
            self.info(at).is_some_and(|(kind, _, _)| kind == KIND_FUNC)
                && self.name_of(at) == Some(name)
        })?;
        u32::try_from(index + 1).ok()
    }

    fn find(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut at = self.types.iter().copied().find(|&at| {
            self.info(at)
                .is_some_and(|(kind, _, _)| kind == KIND_STRUCT)
                && self.name_of(at) == Some(name)
        })?;
        let mut total = 0;
        for (depth, member) in path.iter().enumerate() {
            let (offset, type_id) = self.member(at, member, MAX_ANONYMOUS_DEPTH)?;
            total += offset;
            if depth + 1 < path.len() {
                at = self.composite(type_id)?;
            }
        }
        Some(total)
    }

    /// (byte offset, type id) of `member` in the struct or union at `at`,
    /// looking into anonymous struct and union members too.
    fn member(&self, at: usize, member: &str, depth: usize) -> Option<(u32, u32)> {
        let (_, vlen, kind_flag) = self.info(at)?;
        for index in 0..vlen {
            let entry = at + TYPE_HEADER + index * 12;
            let type_id = self.u32_at(entry + 4)?;
            let raw = self.u32_at(entry + 8)?;
            let offset = if kind_flag { raw & 0x00ff_ffff } else { raw } / 8;
            match self.string(self.u32_at(entry)?) {
                Some(name) if name == member => return Some((offset, type_id)),
                Some("") if depth > 0 => {
                    let inner = self.composite(type_id)?;
                    if let Some((inner_offset, found)) = self.member(inner, member, depth - 1) {
                        return Some((offset + inner_offset, found));
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// The struct or union a type id names, through typedefs and qualifiers,
    /// and for an array its first element.
    fn composite(&self, mut type_id: u32) -> Option<usize> {
        for _ in 0..8 {
            let at = *self.types.get((type_id as usize).checked_sub(1)?)?;
            let (kind, _, _) = self.info(at)?;
            if kind == KIND_STRUCT || kind == KIND_UNION {
                return Some(at);
            }
            type_id = match kind {
                KIND_ARRAY => self.u32_at(at + TYPE_HEADER)?,
                _ if WRAPPERS.contains(&kind) => self.u32_at(at + 8)?,
                _ => return None,
            };
        }
        None
    }

    /// (kind, vlen, kind_flag) of the type at `at`.
    fn info(&self, at: usize) -> Option<(u32, usize, bool)> {
        let info = self.u32_at(at + 4)?;
        Some((
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        ))
    }

    fn name_of(&self, at: usize) -> Option<&str> {
        self.string(self.u32_at(at)?)
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let start = self.strings + offset as usize;
        let end = start + self.data.get(start..)?.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&self.data[start..end]).ok()
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.data.get(at..at + 2)?.try_into().ok()?,
        ))
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.data.get(at..at + 4)?.try_into().ok()?,
        ))
    }
}

/// Bytes that follow a type's 12-byte header, by kind (see the kernel's
/// Documentation/bpf/btf.rst).
fn extra_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_struct_pid_and_tgid_are_found_side_by_side() {
        let btf = Btf::from_kernel().unwrap();
        let pid = btf.offset("task_struct", &["pid"]).unwrap();
        let tgid = btf.offset("task_struct", &["tgid"]).unwrap();
        assert_eq!(
            tgid,
            pid + 4,
            "pid_t pid; pid_t tgid; are adjacent in task_struct"
        );
        assert!(btf.offset("task_struct", &["no_such_member"]).is_err());
    }

    #[test]
    fn kfuncs_are_found_by_name_and_nothing_else_is() {
        let btf = Btf::from_kernel().unwrap();
        let id = btf
            .function("bpf_task_from_pid")
            .expect("a kernel with BTF has this kfunc");
        assert!(id > 0);
        assert_ne!(btf.function("bpf_task_release"), Some(id));
        // A struct of that name would not do, nor a function that is not there.
        assert_eq!(btf.function("task_struct"), None);
        assert_eq!(btf.function("no_such_function_here"), None);
    }

    #[test]
    fn nested_and_anonymous_members_are_found() {
        let btf = Btf::from_kernel().unwrap();
        // struct upid numbers[]: the first upid's nr is at the array's start.
        let numbers = btf.offset("pid", &["numbers"]).unwrap();
        assert_eq!(btf.offset("pid", &["numbers", "nr"]).unwrap(), numbers);
        // thread_info.status sits inside task_struct's embedded thread_info.
        let thread_info = btf.offset("task_struct", &["thread_info"]).unwrap();
        let status = btf.offset("thread_info", &["status"]).unwrap();
        assert_eq!(
            btf.offset("task_struct", &["thread_info", "status"])
                .unwrap(),
            thread_info + status
        );
        assert!(btf.offset("task_struct", &["thread_info", "nope"]).is_err());
    }
}
