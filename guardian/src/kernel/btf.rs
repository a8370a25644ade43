//! Just enough of a BTF reader to find where a field sits in a kernel struct,
//! from /sys/kernel/btf/vmlinux. Rust eBPF has no CO-RE, so the BPF LSM
//! program is handed `task_struct.tgid`'s offset as a global instead of
//! compiling in a layout that differs between kernels. (aya 0.14 parses BTF
//! but keeps member lookups crate-private.)

#![forbid(unsafe_code)]

use std::{fs, io};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const TYPE_HEADER: usize = 12;

/// Byte offset of `member` in `struct name` of the running kernel.
pub fn member_offset(name: &str, member: &str) -> io::Result<u32> {
    let data = fs::read(VMLINUX)?;
    find_member(&data, name, member).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("BTF has no struct {name} with member {member}"),
        )
    })
}

fn find_member(data: &[u8], name: &str, member: &str) -> Option<u32> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    if u16_at(0)? != MAGIC {
        return None;
    }
    let header_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = header_len + type_off;
    let strings = header_len + str_off;
    let string = |offset: u32| {
        let start = strings + offset as usize;
        let end = start + data.get(start..)?.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&data[start..end]).ok()
    };
    let mut at = types;
    while at < types + type_len {
        let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        if kind == KIND_STRUCT && string(name_off) == Some(name) {
            for index in 0..vlen {
                let entry = at + TYPE_HEADER + index * 12;
                if string(u32_at(entry)?) == Some(member) {
                    let raw = u32_at(entry + 8)?;
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    return Some(bits / 8);
                }
            }
            return None;
        }
        at += TYPE_HEADER + extra_bytes(kind, vlen)?;
    }
    None
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
        let pid = member_offset("task_struct", "pid").unwrap();
        let tgid = member_offset("task_struct", "tgid").unwrap();
        assert_eq!(
            tgid,
            pid + 4,
            "pid_t pid; pid_t tgid; are adjacent in task_struct"
        );
        assert!(member_offset("task_struct", "no_such_member").is_err());
    }
}
