//! The BPF LSM mode (see the programs' `lsm` module): whether this kernel
//! runs BPF LSM programs at all, and loading, attaching and detaching them.
//! A kernel built with CONFIG_BPF_LSM loads and attaches them even when `bpf`
//! is missing from its active LSM list, and then never calls them; so the
//! list is read first, and without `bpf` in it the system-call programs
//! (`syscalls`) stay in force.

use std::{fs, io, path::Path};

use aya::{
    Ebpf,
    programs::{Lsm, lsm::LsmLinkId},
};
use guardian_ebpf::programs;

use super::KernelError;

/// The active LSMs, in the order the kernel calls them.
const ACTIVE_LSMS: &str = "/sys/kernel/security/lsm";

/// Loads every BPF LSM program, where the kernel runs them; the reason
/// when it does not.
pub(super) fn load(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), String> {
    match active_lsms() {
        Ok(list) if list.split(',').any(|lsm| lsm.trim() == "bpf") => {}
        Ok(list) => {
            return Err(format!(
                "bpf is not in the active LSM list ({}): add it to the kernel command line, \
                 e.g. lsm={},bpf (ningen-shikkaku doctor says how)",
                list.trim(),
                list.trim()
            ));
        }
        Err(err) => return Err(format!("cannot read {ACTIVE_LSMS}: {err}")),
    }
    for (name, hook) in programs::LSM {
        program(ebpf, name)
            .and_then(|lsm| {
                lsm.load(hook, btf)
                    .map_err(|source| KernelError::Program { name, source })
            })
            .map_err(|err| super::attach::without_empty_log(err.to_string()))?;
    }
    Ok(())
}

/// Attaches every BPF LSM program; on failure none stays attached.
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<Vec<(&'static str, LsmLinkId)>, KernelError> {
    let mut links = Vec::new();
    for (name, _) in programs::LSM {
        match program(ebpf, name).and_then(|lsm| {
            lsm.attach()
                .map_err(|source| KernelError::Program { name, source })
        }) {
            Ok(link) => links.push((name, link)),
            Err(err) => {
                detach(ebpf, links);
                return Err(err);
            }
        }
    }
    Ok(links)
}

/// Detaches `links`.
pub(super) fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, LsmLinkId)>) {
    for (name, link) in links {
        if let Ok(lsm) = program(ebpf, name) {
            let _ = lsm.detach(link);
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Lsm, KernelError> {
    ebpf.program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })
}

/// The active LSM list, mounting securityfs first where nothing has.
fn active_lsms() -> io::Result<String> {
    if !Path::new(ACTIVE_LSMS).exists() {
        nix::mount::mount(
            Some("securityfs"),
            "/sys/kernel/security",
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    fs::read_to_string(ACTIVE_LSMS)
}
