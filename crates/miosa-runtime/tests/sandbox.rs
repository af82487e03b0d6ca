//! Real sandboxes with real runc: lifecycle, isolation, limits, teardown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{cgroup_dirs, cgroup_value, mounts_mentioning, processes_of, TestHost};
use miosa_runtime::{ContainerState, RuntimeError};

#[tokio::test]
async fn create_is_ready_and_destroy_leaves_no_trace() {
    let host = TestHost::new().await;
    let spec = host.spec();
    let id = spec.id.clone();
    host.runtime.create(&spec).await.unwrap();

    // Ready means the agent answers on the host-side socket.
    let socket = host.runtime.agent_socket(&id);
    assert!(socket.starts_with(host.sandbox_dir(&id)));
    let reply = health(&socket);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    assert_eq!(
        host.runtime.state(&id).await.unwrap(),
        Some(ContainerState::Running)
    );
    assert!(!processes_of(&id).is_empty());
    assert!(!mounts_mentioning(&id).is_empty());
    assert!(!cgroup_dirs(&id).is_empty());
    let (ok, hostname) = host.sh(&id, "cat /etc/hostname; hostname");
    assert!(ok, "{hostname}");
    assert_eq!(hostname, "sbx-test\nsbx-test\n");

    host.runtime.destroy(&id).await.unwrap();
    host.assert_no_trace(&id);
    assert_eq!(host.runtime.state(&id).await.unwrap(), None);
    assert!(host.runtime.list().await.unwrap().is_empty());

    // Destroying again is fine.
    host.runtime.destroy(&id).await.unwrap();
}

/// A raw `GET /health` on `socket`; returns the whole reply.
fn health(socket: &Path) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[tokio::test]
async fn a_symlink_planted_in_run_miosa_does_not_redirect_the_host() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    // A host socket the sandbox would like the host to talk to instead.
    let decoy_path = host.data_dir.join("decoy.sock");
    let decoy = std::os::unix::net::UnixListener::bind(&decoy_path).unwrap();
    decoy.set_nonblocking(true).unwrap();
    let (ok, out) = host.sh(
        &spec.id,
        &format!(
            "rm /run/miosa/agent.sock && ln -s {} /run/miosa/agent.sock",
            decoy_path.display()
        ),
    );
    assert!(ok, "{out}");
    let reply = health(&host.runtime.agent_socket(&spec.id));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        decoy.accept().is_err(),
        "the host was redirected to the decoy"
    );
}

#[tokio::test]
async fn the_network_namespace_has_only_loopback() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    let (ok, dev) = host.sh(&spec.id, "cat /proc/net/dev");
    assert!(ok, "{dev}");
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{dev}");
    let (_, route) = host.sh(&spec.id, "cat /proc/net/route | wc -l");
    assert_eq!(route.trim(), "1", "only the header: no routes");
}

#[tokio::test]
async fn the_host_outside_system_dirs_is_invisible() {
    let host = TestHost::new().await;
    let a = host.spec();
    let b = host.spec();
    host.runtime.create(&a).await.unwrap();
    host.runtime.create(&b).await.unwrap();
    // A marker in b's writable layer must not be visible from a.
    let (ok, out) = host.sh(&b.id, "echo secret > /tmp/marker-b && cat /tmp/marker-b");
    assert!(ok, "{out}");

    let (ok, root) = host.sh(&a.id, "ls -A /");
    assert!(ok, "{root}");
    let entries: HashSet<&str> = root.lines().collect();
    for absent in ["work", "farm", "old_root", "mnt", "srv", "media", "boot"] {
        assert!(!entries.contains(absent), "/{absent} visible: {root}");
    }
    let data_dir = host.data_dir.to_string_lossy().into_owned();
    let checks = [
        format!("test ! -e {data_dir}"),
        "test ! -e /tmp/marker-b".into(),
        format!(
            "test ! -e /tmp/{}",
            host.data_dir.file_name().unwrap().to_string_lossy()
        ),
        "test -z \"$(ls -A /root)\"".into(),
        "test -z \"$(ls -A /home/user)\"".into(),
        "test ! -e /etc/ssl/private".into(),
        "test ! -e /etc/shadow".into(),
        "test ! -e /run/miosa/../../sandboxes".into(),
        // Its own PID namespace: only a handful of processes, none of the host's.
        "test $(ls /proc | grep -c '^[0-9]') -lt 10".into(),
        // System dirs are read-only, even for root inside.
        "! touch /usr/bin/x 2>/dev/null".into(),
        "! touch /etc/ssl/certs/x 2>/dev/null".into(),
        "! touch /opt/miosa/miosa 2>/dev/null".into(),
        // The writable layer works.
        "touch /etc/new-file /root/x /home/user/x".into(),
    ];
    for check in &checks {
        let (ok, out) = host.sh(&a.id, check);
        assert!(ok, "{check}: {out}");
    }
    let (_, mounts) = host.sh(&a.id, "cat /proc/self/mountinfo");
    assert!(
        !mounts.contains(&b.id),
        "the other sandbox is named in the mounts: {mounts}"
    );
    // The writes went to a's upper layer, not to the shared template.
    assert!(host.sandbox_dir(&a.id).join("upper/etc/new-file").exists());
    let template = host.data_dir.join("templates/default/rootfs");
    assert!(!template.join("etc/new-file").exists());
    assert!(!template.join("tmp/marker-b").exists());
}

#[tokio::test]
async fn privileges_are_reduced() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    let id = &spec.id;
    // CapBnd of Docker's default set minus NET_RAW and MKNOD.
    let (ok, caps) = host.sh(id, "grep CapBnd /proc/self/status");
    assert!(ok, "{caps}");
    assert_eq!(
        caps.split_whitespace().nth(1),
        Some("00000000a00405fb"),
        "{caps}"
    );
    let (_, status) = host.sh(id, "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    for denied in [
        "unshare -U true",
        "unshare -m true",
        "mount -t tmpfs none /tmp",
        "mknod /tmp/sda b 8 0",
    ] {
        let (ok, out) = host.sh(id, &format!("{denied} 2>&1"));
        assert!(!ok, "{denied} succeeded: {out}");
    }
    // Allowed devices work, others are not even present.
    let (ok, out) = host.sh(
        id,
        "head -c 4 /dev/urandom | wc -c && echo x > /dev/null && test ! -e /dev/vda",
    );
    assert!(ok, "{out}");
    // The agent's environment carries the sandbox's variables.
    let (_, env) = host.sh(id, "tr '\\0' '\\n' < /proc/1/environ");
    assert!(env.contains("MIOSA_TEST=1\n"), "{env}");
    assert!(env.contains("HOME=/root\n"), "{env}");
}

#[tokio::test]
async fn limits_are_in_the_host_cgroups() {
    let host = TestHost::new().await;
    let mut spec = host.spec();
    spec.cpu = 1.25;
    spec.memory_mb = 300;
    host.runtime.create(&spec).await.unwrap();
    let id = &spec.id;
    let bytes = (300u64 << 20).to_string();
    assert_eq!(cgroup_value(id, "memory", "memory.limit_in_bytes"), bytes);
    assert_eq!(
        cgroup_value(id, "memory", "memory.memsw.limit_in_bytes"),
        bytes
    );
    assert_eq!(cgroup_value(id, "cpu", "cpu.cfs_quota_us"), "125000");
    assert_eq!(cgroup_value(id, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_value(id, "pids", "pids.max"), "512");

    let usage = host.runtime.usage(id).await.unwrap();
    assert!(usage.memory_bytes > 0, "{usage:?}");
    assert!(usage.cpu_ns > 0, "{usage:?}");
    assert!(usage.pids >= 1, "{usage:?}");

    // The pids limit bites: 600 sleeping children cannot all start.
    let (_, out) = host.sh(
        id,
        "n=0; for i in $(seq 600); do sleep 5 & n=$((n+1)); done 2>/dev/null; echo started",
    );
    let max: u64 = cgroup_value(id, "pids", "pids.current").parse().unwrap();
    assert!(max <= 512, "{max} tasks: {out}");
    assert!(
        cgroup_value(id, "pids", "pids.events").contains("max "),
        "pids.events"
    );
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() * st.fragment_size()
}

#[tokio::test]
async fn a_full_disk_is_enospc_inside_and_nothing_outside() {
    let host = TestHost::new().await;
    let mut spec = host.spec();
    spec.disk_mb = 64;
    host.runtime.create(&spec).await.unwrap();
    let other = host.spec();
    host.runtime.create(&other).await.unwrap();
    let id = &spec.id;

    // Its root file system is as large as its disk.
    let (ok, out) = host.sh(id, "df -m / | tail -n 1");
    assert!(ok, "{out}");
    let size_mb: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((50..=64).contains(&size_mb), "df: {out}");

    let host_free = free_bytes(&host.data_dir);
    // Its writable layer and /run/miosa stop at it (and so would the
    // agent's log, which root inside cannot even open: it is the host's).
    let (_, out) = host.sh(id, "echo x >> /proc/1/fd/2; echo exit=$?");
    assert!(
        out.contains("Permission denied") && !out.contains("exit=0"),
        "{out}"
    );
    for target in ["/tmp/fill", "/run/miosa/fill"] {
        let (ok, out) = host.sh(
            id,
            &format!("dd if=/dev/zero of={target} bs=1M count=100 conv=notrunc 2>&1; echo exit=$?"),
        );
        assert!(ok, "{out}");
        assert!(
            out.contains("No space left on device") && !out.contains("exit=0"),
            "{target}: {out}"
        );
        let (ok, out) = host.sh(id, &format!("rm -f {target} 2>/dev/null; true"));
        assert!(ok, "{out}");
    }
    let used = host_free.saturating_sub(free_bytes(&host.data_dir));
    assert!(
        used < 80 << 20,
        "the host lost {used} bytes to a 64 MiB disk"
    );
    // The other sandbox writes on.
    let (ok, out) = host.sh(
        &other.id,
        "dd if=/dev/zero of=/tmp/f bs=1M count=80 2>&1 && rm /tmp/f",
    );
    assert!(ok, "{out}");

    host.runtime.destroy(id).await.unwrap();
    host.assert_no_trace(id);
    host.runtime.destroy(&other.id).await.unwrap();
    host.assert_no_trace(&other.id);
}

#[tokio::test]
async fn the_agent_log_is_trimmed() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    let log = host.sandbox_dir(&spec.id).join("container.log");
    // A chatty agent: 3 MB of lines.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for _ in 0..30_000 {
            f.write_all(&[b'x'; 99]).unwrap();
            f.write_all(b"\n").unwrap();
        }
    }
    assert!(std::fs::metadata(&log).unwrap().len() >= 3_000_000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&log).unwrap().len() > 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not trimmed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let kept = host.sandbox_dir(&spec.id).join("container.log.1");
    assert_eq!(std::fs::metadata(kept).unwrap().len(), 256 * 1024);
    host.runtime.destroy(&spec.id).await.unwrap();
    host.assert_no_trace(&spec.id);
}

#[tokio::test]
async fn root_inside_is_an_unprivileged_stranger_outside() {
    use std::os::unix::fs::MetadataExt;
    let host = TestHost::new().await;
    let spec = host.spec();
    let other = host.spec();
    host.runtime.create(&spec).await.unwrap();
    host.runtime.create(&other).await.unwrap();
    let id = &spec.id;
    let (uid, gid) = host.runtime.root_ids(id).unwrap();
    let (other_uid, _) = host.runtime.root_ids(&other.id).unwrap();
    assert!(uid >= 1 << 28 && gid == uid, "{uid}:{gid}");
    assert!(other_uid.abs_diff(uid) >= 65_536, "ranges overlap");

    // The agent (PID 1 inside) runs as that id on the host.
    let pid = std::fs::read_to_string(host.sandbox_dir(id).join("init.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![uid.to_string(); 4],
        "{uids}"
    );
    let (ok, out) = host.sh(id, "cat /proc/self/uid_map; id -u; ls -ln /usr/bin/env");
    assert!(ok, "{out}");
    let map: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", &uid.to_string(), "65536"], "{out}");
    assert_eq!(out.lines().nth(1), Some("0"), "root inside");
    // The host's root (who owns /usr) is nobody in here.
    assert!(
        out.lines().nth(2).unwrap().contains(" 65534 65534 "),
        "{out}"
    );

    // What root and user make inside belongs to their mapped ids outside.
    let (ok, out) = host.sh(
        id,
        "touch /root/by-root && su -s /bin/sh user -c 'touch /home/user/by-user' 2>&1 \
         || setpriv --reuid=1000 --regid=1000 --clear-groups touch /home/user/by-user",
    );
    assert!(ok, "{out}");
    let upper = host.sandbox_dir(id).join("upper");
    let owner = |rel: &str| {
        let m = std::fs::metadata(upper.join(rel)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("root/by-root"), (uid, gid));
    assert_eq!(owner("home/user/by-user"), (uid + 1000, gid + 1000));
    assert_eq!(owner(""), (uid, gid), "the root dir is root's inside");

    // Its directory on the host is closed to everyone but root and it.
    let dir = std::fs::metadata(host.sandbox_dir(id)).unwrap();
    assert_eq!((dir.mode() & 0o7777, dir.uid(), dir.gid()), (0o710, 0, gid));
    let config = std::fs::metadata(host.sandbox_dir(id).join("config.json")).unwrap();
    assert_eq!((config.mode() & 0o777, config.uid()), (0o600, 0));

    for s in [&spec, &other] {
        host.runtime.destroy(&s.id).await.unwrap();
        host.assert_no_trace(&s.id);
    }
    assert_eq!(host.runtime.root_ids(id), None, "the range is free again");
}

#[tokio::test]
async fn pause_freezes_and_resume_thaws() {
    let host = TestHost::new().await;
    let spec = host.spec();
    let id = &spec.id;
    host.runtime.create(&spec).await.unwrap();
    host.runtime.pause(id).await.unwrap();
    assert_eq!(
        host.runtime.state(id).await.unwrap(),
        Some(ContainerState::Paused)
    );
    assert_eq!(cgroup_value(id, "freezer", "freezer.state"), "FROZEN");
    assert!(host
        .runtime
        .list()
        .await
        .unwrap()
        .contains(&(id.clone(), ContainerState::Paused)));
    host.runtime.resume(id).await.unwrap();
    assert_eq!(
        host.runtime.state(id).await.unwrap(),
        Some(ContainerState::Running)
    );
    assert_eq!(cgroup_value(id, "freezer", "freezer.state"), "THAWED");
    let (ok, out) = host.sh(id, "echo alive");
    assert!(ok && out == "alive\n", "{out}");

    // A paused sandbox can be destroyed directly.
    host.runtime.pause(id).await.unwrap();
    host.runtime.destroy(id).await.unwrap();
    host.assert_no_trace(id);
    assert!(matches!(
        host.runtime.pause(id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_reports_containers_and_bare_dirs_and_orphans_are_removed() {
    let host = TestHost::new().await;
    let kept = host.spec();
    let orphan = host.spec();
    host.runtime.create(&kept).await.unwrap();
    host.runtime.create(&orphan).await.unwrap();
    // A directory left behind without a container (e.g. a crash mid-create).
    let bare = host.spec().id;
    std::fs::create_dir_all(host.sandbox_dir(&bare).join("upper")).unwrap();
    // Junk that is not a sandbox id is ignored.
    std::fs::create_dir_all(host.data_dir.join("sandboxes/.tmp")).unwrap();

    let list = host.runtime.list().await.unwrap();
    let mut expected = vec![
        (kept.id.clone(), ContainerState::Running),
        (orphan.id.clone(), ContainerState::Running),
        (bare.clone(), ContainerState::Stopped),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(list, expected, "sorted by id");
    assert_eq!(
        host.runtime.state(&bare).await.unwrap(),
        Some(ContainerState::Stopped)
    );

    let keep: HashSet<String> = [kept.id.clone()].into();
    let mut destroyed = host.runtime.destroy_orphans(&keep).await.unwrap();
    destroyed.sort();
    let mut want = vec![orphan.id.clone(), bare.clone()];
    want.sort();
    assert_eq!(destroyed, want);
    assert_eq!(
        host.runtime.list().await.unwrap(),
        vec![(kept.id.clone(), ContainerState::Running)]
    );
    host.assert_no_trace(&bare);
    host.assert_no_trace(&orphan.id);
}

#[tokio::test]
async fn a_stopped_container_is_reported_and_destroyed() {
    let host = TestHost::new().await;
    let spec = host.spec();
    let id = &spec.id;
    host.runtime.create(&spec).await.unwrap();
    // The agent dies: the container stops but stays known to runc.
    let pid: i32 = std::fs::read_to_string(host.sandbox_dir(id).join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut state = None;
    for _ in 0..200 {
        state = host.runtime.state(id).await.unwrap();
        if state == Some(ContainerState::Stopped) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(state, Some(ContainerState::Stopped));
    host.runtime.destroy(id).await.unwrap();
    assert_eq!(host.runtime.state(id).await.unwrap(), None);
    host.assert_no_trace(id);
}

#[tokio::test]
async fn a_failed_create_removes_everything_and_says_why() {
    // An "agent" that exits at once.
    let host = TestHost::with_agent(Path::new("/usr/bin/false")).await;
    let spec = host.spec();
    let err = host.runtime.create(&spec).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ContainerExited { .. }), "{err}");
    host.assert_no_trace(&spec.id);
    assert!(host.runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_create_with_the_same_id_is_refused_and_harmless() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    let err = host.runtime.create(&spec).await.unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists(_)), "{err}");
    assert_eq!(
        host.runtime.state(&spec.id).await.unwrap(),
        Some(ContainerState::Running)
    );
    let (ok, _) = host.sh(&spec.id, "true");
    assert!(ok);
}

#[tokio::test]
async fn bad_specs_are_refused_before_touching_the_host() {
    let host = TestHost::new().await;
    let mut spec = host.spec();
    spec.id = "../escape".into();
    assert!(matches!(
        host.runtime.create(&spec).await,
        Err(RuntimeError::InvalidSpec { field: "id", .. })
    ));
    assert!(matches!(
        host.runtime.destroy("../../etc").await,
        Err(RuntimeError::InvalidSpec { field: "id", .. })
    ));
    let mut spec = host.spec();
    spec.memory_mb = 0;
    assert!(matches!(
        host.runtime.create(&spec).await,
        Err(RuntimeError::InvalidSpec {
            field: "memory_mb",
            ..
        })
    ));
    assert!(host.runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_restarted_runtime_finds_and_removes_running_sandboxes() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    let template = std::fs::read_link(host.data_dir.join("templates/default")).unwrap();

    // A second runtime on the same data dir, as after `miosa serve` restarts.
    let config = miosa_runtime::RuntimeConfig::new(&host.data_dir, common::agent_binary());
    let restarted = miosa_runtime::Runtime::new(config).await.unwrap();
    assert_eq!(
        std::fs::read_link(host.data_dir.join("templates/default")).unwrap(),
        template,
        "an up-to-date template is kept"
    );
    assert_eq!(
        restarted.list().await.unwrap(),
        vec![(spec.id.clone(), ContainerState::Running)]
    );
    let destroyed = restarted.destroy_orphans(&HashSet::new()).await.unwrap();
    assert_eq!(destroyed, vec![spec.id.clone()]);
    host.assert_no_trace(&spec.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_all_become_ready() {
    let host = TestHost::new().await;
    let specs: Vec<_> = (0..6).map(|_| host.spec()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs.clone() {
        let runtime = host.runtime.clone();
        tasks.spawn(async move {
            runtime
                .create(&spec)
                .await
                .map_err(|e| format!("{}: {e}", spec.id))
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    let running = host.runtime.list().await.unwrap();
    assert_eq!(running.len(), specs.len());
    assert!(running.iter().all(|(_, s)| *s == ContainerState::Running));
    for spec in specs.clone() {
        let runtime = host.runtime.clone();
        tasks.spawn(async move {
            runtime
                .destroy(&spec.id)
                .await
                .map_err(|e| format!("{}: {e}", spec.id))
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert!(host.runtime.list().await.unwrap().is_empty());
    for spec in &specs {
        host.assert_no_trace(&spec.id);
    }
}

/// Each listed call is made with zero arguments inside the sandbox; seccomp
/// answers before the kernel looks at them, so the errno tells the filter's
/// verdict apart from the call's own failure.
const SECCOMP_PROBE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {"mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239, "sysfs": 139,
         "add_key": 248, "keyctl": 250, "move_pages": 279, "perf_event_open": 298,
         "name_to_handle_at": 303, "process_vm_readv": 310, "kcmp": 312,
         "userfaultfd": 323, "io_uring_setup": 425, "open_tree": 428, "fsopen": 430,
         "clone3": 435, "mount_setattr": 442, "unshare": 272, "setns": 308,
         "getppid": 110}
for name, nr in sorted(calls.items()):
    ctypes.set_errno(0)
    r = libc.syscall(nr, 0, 0, 0, 0, 0)
    print(name, ctypes.get_errno() if r == -1 else "ok")
# clone(CLONE_NEWUSER | SIGCHLD) through the raw syscall.
r = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)
if r == 0:
    os._exit(0)
print("clone_newuser", ctypes.get_errno() if r == -1 else "ok")
"#;

#[tokio::test]
async fn seccomp_denies_the_listed_calls() {
    let host = TestHost::new().await;
    let spec = host.spec();
    host.runtime.create(&spec).await.unwrap();
    let out = host.exec(&spec.id, &["/usr/bin/python3", "-c", SECCOMP_PROBE]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: std::collections::HashMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(verdicts.len(), 21, "{text}");
    for (name, verdict) in &verdicts {
        let expected = match *name {
            "getppid" => "ok",
            "clone3" => "38",
            _ => "1",
        };
        assert_eq!(verdict, &expected, "{name}: {text}");
    }
}

#[tokio::test]
async fn an_agent_that_cannot_start_fails_create_with_runc_s_reason() {
    // Not executable: runc itself reports the failure.
    let host = TestHost::with_agent(Path::new("/etc/passwd")).await;
    let spec = host.spec();
    let err = host.runtime.create(&spec).await.unwrap_err();
    match &err {
        RuntimeError::Runc { stderr, .. } => {
            assert!(stderr.contains("permission denied"), "{err}")
        }
        other => panic!("expected a runc error, got {other}"),
    }
    host.assert_no_trace(&spec.id);
}
