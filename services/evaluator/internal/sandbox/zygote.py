"""shoal's sandbox zygote: a prepared Python process that forks one confined child per job.

    python3 zygote.py --control FD [--harness DIR --evaluator PATH] [--netns]

The Go side (zygote.go) starts it, in a fresh network namespace where the kernel allows, and
speaks over a SOCK_SEQPACKET socket at FD: one JSON packet per message.

    zygote -> Go   {"ready": true, "pid": N, "error": "...", "traceback": "...", "missing": [...]}
    Go -> zygote   {"id": N, "kind": "exec"|"evaluate", ...} with the write ends of three pipes
                   (stdout, stderr, report) attached as SCM_RIGHTS
    supervisor -> Go  {"id": N, "exit": code, "signal": n, "timed_out": bool, ...}

With --evaluator the zygote imports the evaluator (and so its heavy modules) once, before
any job; each job then costs a fork. Per job:

    zygote --fork--> supervisor (trusted; never runs candidate code)
        unshare(mount, pid, ipc namespaces); child subreaper
        --fork--> init (pid 1 of the new pid namespace)
            private /proc, /tmp and /dev/shm; every other mount read-only but the work dir;
            rlimits; clean environment; its own uid (root only); no_new_privs;
            then exec the command, or run evaluate() and write the report to the report pipe
        waits for init with the wall-clock limit, SIGKILLs it past the limit; the kernel
        then kills every process of the pid namespace, setsid or not
        replies on the control socket, exits

The report travels over a pipe whose write end only init and its descendants hold; the
supervisor's reply, which the candidate cannot reach, carries what the kernel says (exit
status, signal, timeout, CPU time). See docs/sandbox.md for what a candidate can forge.
"""

import argparse
import ctypes
import errno
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MOUNT_FLAGS = {
    "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME,
}

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# Candidates run as UID_BASE + their supervisor's pid when the zygote is root: live
# candidates never share a uid, so RLIMIT_NPROC is per candidate and none can signal another.
UID_BASE = 200000

MAX_PACKET = 1 << 20

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags):
    check(libc.unshare(flags), "unshare")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def prctl(option, arg):
    check(libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def loopback_up():
    """Brings lo up in the zygote's new network namespace, so that evaluators may still use
    localhost; nothing else exists there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--control", type=int, required=True)
    p.add_argument("--harness", default="")
    p.add_argument("--evaluator", default="")
    p.add_argument("--netns", action="store_true")
    args = p.parse_args()
    ctl = socket.socket(fileno=args.control)
    # Supervisors are reaped by the kernel; each resets this before forking its init.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ready = {"ready": True, "pid": os.getpid(), "missing": []}
    if args.netns:
        try:
            loopback_up()
        except OSError as e:
            ready["missing"].append(f"loopback in the network namespace ({e.strerror})")
    state = None
    if args.evaluator:
        try:
            sys.path.insert(0, args.harness)
            import harness
            state = harness.prepare(args.evaluator)
        except BaseException as exc:  # the evaluator's import failed: say so, then serve nothing
            ready["ready"] = False
            ready["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
            ready["traceback"] = traceback.format_exc()
    send(ctl, ready)
    if not ready["ready"]:
        return
    serve(ctl, state)


def send(ctl, msg):
    ctl.send(json.dumps(msg).encode())


def serve(ctl, state):
    zygote = os.getpid()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(ctl, MAX_PACKET, 3)
        except InterruptedError:
            continue
        if not data:
            return  # Go closed the socket: shut down; supervisors die with us (PDEATHSIG)
        job = json.loads(data)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                supervise(ctl, zygote, job, fds, state)
            except BaseException:
                traceback.print_exc()
                code = 70
            os._exit(code)
        for fd in fds:
            os.close(fd)


def supervise(ctl, zygote, job, fds, state):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:
        os._exit(1)
    reply = {"id": job["id"], "missing": []}
    if len(fds) != 3:
        reply["error"] = f"job came with {len(fds)} file descriptors, want 3"
        send(ctl, reply)
        return
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        reply["missing"].append("child subreaper")
    pidns = mntns = False
    for flags, name in ((CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC, "all"), (CLONE_NEWNS, "mount")):
        try:
            unshare(flags)
            mntns, pidns = True, name == "all"
            break
        except OSError:
            continue
    if not pidns:
        reply["missing"].append("pid namespace (descendants are found through the subreaper instead)")
    if not mntns:
        reply["missing"].append("mount namespace (no private /tmp, bundle and file system writable as far as file modes allow)")
    else:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    uid = UID_BASE + os.getpid() if os.geteuid() == 0 else None
    if uid is None:
        reply["missing"].append("a uid of its own per candidate (the service is not root)")
    sync_r, sync_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 71
        try:
            ctl.close()
            os.close(sync_w)
            os.read(sync_r, 1)  # wait until the supervisor has placed us (cgroup)
            os.close(sync_r)
            init(job, fds, state, mntns, pidns, uid)
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    for fd in fds:
        os.close(fd)
    os.close(sync_r)
    cg = job.get("cgroup")
    if cg:
        try:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as e:
            reply["missing"].append(f"cgroup ({e.strerror})")
    os.close(sync_w)
    timeout = job.get("timeout", 0)
    timed_out = not wait_exit(pid, start + timeout if timeout > 0 else None)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    reap_all()
    reply.update({
        "pid": pid, "uid": uid, "timed_out": timed_out, "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
    })
    if os.WIFSIGNALED(status):
        reply["exit"], reply["signal"] = -1, os.WTERMSIG(status)
    else:
        reply["exit"] = os.WEXITSTATUS(status)
    send(ctl, reply)


def wait_exit(pid, deadline):
    """Waits for pid to exit; False when the deadline passed first."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                r, _, _ = select.select([pidfd], [], [], left)
            except InterruptedError:
                continue
            if r:
                return True
    finally:
        os.close(pidfd)


def reap_all():
    """Kills and reaps whatever is left below the supervisor: processes that left init's pid
    namespace cannot exist, but without one, setsid'd descendants reparent here (subreaper)."""
    while True:
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return


def init(job, fds, state, mntns, pidns, uid):
    out, err, report = fds
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (null, out, err):
        os.close(fd)
    os.set_inheritable(report, False)  # commands the candidate runs do not get it
    work = job["workdir"]
    notes = []
    if mntns:
        confine_files(work, job.get("keep", []), pidns, notes)
    for limit, value in job.get("rlimits", {}).items():
        try:
            resource.setrlimit(getattr(resource, limit), (value, value))
        except (ValueError, OSError) as e:
            notes.append(f"{limit}: {e}")
    os.chdir(work)
    if uid is not None:
        os.chown(work, uid, uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (job.get("max_procs", 256),) * 2)
        except (ValueError, OSError) as e:
            notes.append(f"RLIMIT_NPROC: {e}")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    if not pidns:
        os.setsid()  # at least a process group to kill
    os.environ.clear()
    os.environ.update(job.get("env", {}))
    if notes:
        print("sandbox: " + "; ".join(notes), file=sys.stderr, flush=True)
    if job["kind"] == "exec":
        argv = job["argv"]
        try:
            os.execvpe(argv[0], argv, dict(os.environ))
        except OSError as e:
            print(f"sandbox: exec {argv[0]}: {e.strerror}", file=sys.stderr, flush=True)
            os._exit(127)
    import harness
    result = harness.run(state, job["program"], job.get("cascade", False), job.get("thresholds", []))
    data = json.dumps(result, allow_nan=False).encode()
    sys.stdout.flush()
    sys.stderr.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(report, view):]
    # Threads or atexit handlers left behind by the evaluator must not hold the result back.
    os._exit(0)


def confine_files(work, keep, pidns, notes):
    """Makes every mount read-only but a private /tmp and /dev/shm and the work dir, and
    mounts a /proc that shows only the candidate's pid namespace.

    Directories the job needs (the work dir, the bundle, the interpreter's own) are bound
    back at their paths after /tmp, and any ancestor other users cannot traverse (a 0700
    /root holding a pyenv Python), are covered by tmpfs: the job keeps what it needs and
    loses sight of the rest."""
    paths = [work] + keep + interpreter_dirs()
    covers = {"/tmp"}
    for path in paths:
        cover = hidden_ancestor(path)
        if cover:
            covers.add(cover)
    # A cover under another one is gone once that is mounted; its paths are recreated.
    covers = {c for c in covers if not any(c.startswith(o + "/") for o in covers)}
    # Held open, since covering an ancestor hides them.
    held = {}
    for path in paths:
        if path in held:
            continue
        try:
            held[path] = os.open(path, os.O_PATH | os.O_DIRECTORY)
        except OSError as e:
            notes.append(f"keep {path}: {e.strerror}")
    for point, opts in mounts():
        if point == "/proc" or point.startswith("/proc/") or point == "/dev" or point.startswith("/dev/"):
            continue
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | opts)
        except OSError as e:
            notes.append(f"read-only {point}: {e.strerror}")
    for point, size, mode in [("/dev/shm", "64m", "1777")] + [(c, "256m" if c == "/tmp" else "1m", "1777" if c == "/tmp" else "0755") for c in sorted(covers, key=len)]:
        try:
            mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
        except OSError as e:
            notes.append(f"private {point}: {e.strerror}")
    # Shallow paths first, so that a deeper one is bound on top.
    for path in sorted(held, key=len):
        fd = held[path]
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
            flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV
            if path != work:
                flags |= MS_RDONLY
            mount(None, path, None, flags)
        except OSError as e:
            notes.append(f"bind {path}: {e.strerror}")
        os.close(fd)
    if pidns:
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as e:
            notes.append(f"private /proc: {e.strerror}")


def interpreter_dirs():
    """The interpreter's prefix and import path, which a job running as another uid must
    still read."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    dirs.update(p for p in sys.path if p)
    return sorted(d for d in dirs if os.path.isdir(d))


def hidden_ancestor(path):
    """The shallowest proper ancestor of path that other users cannot traverse, or None."""
    parts = os.path.abspath(path).split("/")[1:-1]
    current = ""
    for part in parts:
        current += "/" + part
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def mounts():
    """(mount point, per-mount flags to keep) for every mount, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            opts = 0
            for o in fields[5].split(","):
                opts |= MOUNT_FLAGS.get(o, 0)
            out.append((point, opts))
    return out


if __name__ == "__main__":
    main()
