//! The seccomp profile of every sandbox.
//!
//! This is a **deny-list** modelled on Docker's default profile: everything is
//! allowed except the calls below, which fail with `EPERM`. Docker's profile is
//! an allow-list (unknown calls fail), which also blocks syscalls added by newer
//! kernels until they are reviewed; ours does not, so a new kernel interface is
//! reachable until it is added here.
//!
//! Denied:
//! - kernel, clock, swap, quota, reboot and module administration;
//! - keyrings (`add_key`, `keyctl`, `request_key`) — not namespaced;
//! - `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*` — large attack surface
//!   (Docker denies io_uring since 25.0);
//! - the mount API (`mount`, `umount2`, `fsopen`, `open_tree`, …), `pivot_root`,
//!   `unshare`, `setns`, and `clone` with any namespace flag, so code inside
//!   cannot create user namespaces (which would hand it a full capability set
//!   over fresh namespaces) or reshape its mount tree;
//! - `clone3` fails with `ENOSYS`: its flags live in memory where seccomp cannot
//!   look, and libc falls back to `clone`, whose flags we can check;
//! - cross-process memory access (`process_vm_*`, `kcmp`), NUMA policy calls,
//!   `name_to_handle_at`/`open_by_handle_at` (the "shocker" escape).
//!
//! Not covered: `personality` stays allowed (OCI seccomp conditions on one
//! argument are ANDed, so "allow only these values" cannot be written as a
//! deny rule); `ptrace` stays allowed as in Docker on kernels ≥ 4.8; `clone`
//! flag checks apply to the x86-64/x86 calling convention; nothing here limits
//! resource use (the cgroups do). Capabilities already stop most of the denied
//! administration calls; seccomp is the second layer.

use serde::{Deserialize, Serialize};

/// Calls that fail with `EPERM`.
pub(crate) const DENIED: &[&str] = &[
    "_sysctl",
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// `CLONE_NEW*` flags: `clone` with any of them fails with `EPERM`.
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// `linux.seccomp` of the OCI runtime spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Seccomp {
    pub(crate) default_action: String,
    pub(crate) architectures: Vec<String>,
    pub(crate) syscalls: Vec<SyscallRule>,
}

/// One rule: these calls, optionally only with these argument values, get this action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyscallRule {
    pub(crate) names: Vec<String>,
    pub(crate) action: String,
    pub(crate) errno_ret: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) args: Vec<ArgCondition>,
}

/// A condition on one syscall argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArgCondition {
    pub(crate) index: u32,
    pub(crate) value: u64,
    pub(crate) value_two: u64,
    pub(crate) op: String,
}

/// The profile every sandbox gets.
pub(crate) fn profile() -> Seccomp {
    let errno = |names: Vec<String>, errno_ret, args| SyscallRule {
        names,
        action: "SCMP_ACT_ERRNO".into(),
        errno_ret,
        args,
    };
    let mut syscalls = vec![errno(
        DENIED.iter().map(|s| (*s).to_string()).collect(),
        EPERM,
        Vec::new(),
    )];
    // Separate rules are ORed; conditions inside one rule are ANDed.
    syscalls.extend(NAMESPACE_FLAGS.iter().map(|&flag| {
        errno(
            vec!["clone".into()],
            EPERM,
            vec![ArgCondition {
                index: 0,
                value: flag,
                value_two: flag,
                op: "SCMP_CMP_MASKED_EQ".into(),
            }],
        )
    }));
    syscalls.push(errno(vec!["clone3".into()], ENOSYS, Vec::new()));
    Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
            .map(String::from)
            .to_vec(),
        syscalls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_the_escape_hatches_and_allows_the_rest() {
        let p = profile();
        assert_eq!(p.default_action, "SCMP_ACT_ALLOW");
        let denied: Vec<&str> = p.syscalls[0].names.iter().map(String::as_str).collect();
        for name in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "bpf",
            "open_by_handle_at",
        ] {
            assert!(denied.contains(&name), "{name} must be denied");
        }
        for name in ["clone", "execve", "ptrace", "personality"] {
            assert!(
                !denied.contains(&name),
                "{name} must not be denied outright"
            );
        }
        let mut sorted = DENIED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, DENIED, "keep the list sorted and unique");
    }

    #[test]
    fn clone_is_denied_only_with_namespace_flags() {
        let p = profile();
        let clone_rules: Vec<_> = p.syscalls.iter().filter(|r| r.names == ["clone"]).collect();
        assert_eq!(clone_rules.len(), NAMESPACE_FLAGS.len());
        assert!(clone_rules.iter().all(|r| r.args.len() == 1
            && r.args[0].op == "SCMP_CMP_MASKED_EQ"
            && r.args[0].value == r.args[0].value_two));
        let clone3 = p.syscalls.iter().find(|r| r.names == ["clone3"]).unwrap();
        assert_eq!(clone3.errno_ret, ENOSYS);
    }

    #[test]
    fn serialises_with_oci_field_names() {
        let json = serde_json::to_value(profile()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(json["syscalls"][0]["errnoRet"], 1);
        assert_eq!(json["syscalls"][1]["args"][0]["valueTwo"], 0x0002_0000);
        assert!(json["syscalls"][0].get("args").is_none());
    }
}
