//! Tracepoint field offsets, read from the running kernel's tracefs, so the
//! eBPF programs never hard-code a layout that changes between kernels.

#![forbid(unsafe_code)]

use std::{fs, io, path::Path};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs if it is not mounted yet (aya also needs it to attach).
pub fn ensure_mounted() -> io::Result<()> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// The format description of one tracepoint.
pub struct Format(String);

impl Format {
    /// Reads `events/<category>/<name>/format`.
    pub fn read(category: &str, name: &str) -> io::Result<Self> {
        let path = Path::new(TRACEFS)
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        fs::read_to_string(path).map(Self)
    }

    /// Offset of `field`, if the tracepoint has it.
    pub fn offset(&self, field: &str) -> Option<u32> {
        self.0.lines().find_map(|line| {
            let decl = line.trim().strip_prefix("field:")?;
            let (decl, rest) = decl.split_once(';')?;
            let declared = decl.split_whitespace().last()?.trim_start_matches('*');
            let declared = declared.split('[').next()?;
            if declared != field {
                return None;
            }
            rest.trim()
                .strip_prefix("offset:")?
                .split(';')
                .next()?
                .parse()
                .ok()
        })
    }

    /// Offset of a field the programs cannot work without.
    pub fn require(&self, field: &str) -> io::Result<u32> {
        self.offset(field).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("tracepoint has no field {field:?}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: task_newtask\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
        \tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";

    #[test]
    fn offsets_are_read_by_field_name() {
        let format = Format(FORK.to_owned());
        assert_eq!(format.offset("pid"), Some(8));
        assert_eq!(format.offset("comm"), Some(12));
        assert_eq!(format.offset("clone_flags"), Some(32));
        assert_eq!(format.offset("common_type"), Some(0));
        assert_eq!(format.offset("group_dead"), None);
        assert!(format.require("group_dead").is_err());
    }
}
