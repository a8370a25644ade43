//! A tamper flood for the end-to-end tests: `tamper_flood PID SECONDS` starts
//! processes as fast as it can for SECONDS, each asking to ptrace-attach PID
//! at once (which the kernel refuses another uid, and the guardian audits),
//! then prints how many it started.
//! Each child shares our memory and runs on a stack of its own, as vfork
//! children do, so a start costs little more than the kernel's own work.

use std::{
    ffi::c_void,
    time::{Duration, Instant},
};

const STACK: usize = 64 * 1024;

/// The child: one PTRACE_ATTACH of PID.
extern "C" fn attempt(target: *mut c_void) -> libc::c_int {
    // SAFETY: PTRACE_ATTACH takes no pointers; a refusal is only a return value.
    unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            target as usize as libc::pid_t,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_void>(),
        );
    }
    0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(seconds)) = (
        args.get(1).and_then(|a| a.parse::<usize>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: tamper_flood PID SECONDS");
        std::process::exit(2);
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down: the child starts at the (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut started = 0u64;
    while Instant::now() < deadline {
        // SAFETY: with CLONE_VFORK we are suspended until the child is gone,
        // so it has the stack to itself, and `attempt` touches nothing else.
        let child = unsafe {
            libc::clone(
                attempt,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                target as *mut c_void,
            )
        };
        if child > 0 {
            // SAFETY: reaping our own child; no status is wanted.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            started += 1;
        }
    }
    println!("{started}");
}
