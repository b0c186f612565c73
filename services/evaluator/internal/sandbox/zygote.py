"""shoal's sandbox zygote: a prepared Python process that forks one confined child per job.

    python3 zygote.py --control FD [--harness DIR --evaluator PATH] [--netns] [--host-root]
                      [--keep DIR]... [--root DIR]... [--spares N] [--scratch-mb N]
                      [--cgroup DIR]

The Go side (zygote.go) starts it, in a fresh network namespace where the kernel allows, and
speaks over a SOCK_SEQPACKET socket at FD: one JSON packet per message.

    zygote -> Go   {"ready": true, "pid": N, "error": "...", "traceback": "...", "missing": [...]}
    Go -> zygote   {"id": N, "kind": "exec"|"evaluate", "inputs": [name], ...} with the write
                   ends of three pipes (stdout, stderr, report), the read end of a kill pipe
                   and one descriptor per input file as SCM_RIGHTS
    supervisor -> Go  {"id": N, "exit": code, "signal": n, "timed_out": bool, "left": n, ...}

First, in a mount namespace of its own, the zygote builds the minimal root that every job
sees and moves into it (pivot_root): the interpreter and the system libraries, a few files
of /etc, a /dev of a few nodes, the --keep directories (bundle, harness), all read-only; the
host's home, state and log directories do not exist there. With --evaluator it then imports
the evaluator (and so its heavy modules) once. It keeps --spares supervisors on standby, each
forked ahead with its namespaces made (a copy of that small tree) and its init's scratch
mounted, so that a job pays for none of that:

    zygote (in the minimal root) --fork--> supervisor (trusted; never runs candidate code)
        unshare(mount, pid, ipc namespaces); child subreaper
        --fork--> init (pid 1 of the new pid namespace)
            its own /proc; a fresh size-limited tmpfs on /tmp (the work dirs live there, or
            on one of their own for --root dirs outside /tmp) and /dev/shm; waits for the job
    job: zygote --> init (the pipes, the inputs) and its supervisor (the kill pipe)
            init makes the work dir and copies the inputs (the candidate's program) into it;
            rlimits; clean environment; its own uid (--host-root) or no capabilities (a user
            namespace); no_new_privs; then exec the command, or run evaluate(), write the
            report, close its pipes and tell the supervisor it is done
        the supervisor waits for init with the wall-clock limit (SIGKILL past it) or for a
        kill request from Go (the output limit); when init says it is done, counts the
        processes it left running, replies, and lets init exit: the kernel then kills every
        process of the pid namespace, setsid or not

The report travels over a pipe whose write end only init and its descendants hold; the
supervisor's reply, which the candidate cannot reach, carries what the kernel says (exit
status, signal, timeout, CPU time) and what it counted. See docs/sandbox.md for what a
candidate can forge.
"""

import argparse
import collections
import ctypes
import errno
import fcntl
import gc
import json
import os
import resource
import select
import signal
import platform
import socket
import stat
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
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MOUNT_FLAGS = {
    "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME,
}

SYS_MOUNT_SETATTR = 442  # the same on every architecture (the generic syscall table)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT, SECBIT_NOROOT_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE and its lock: uid 0 in a
# user namespace gains no capabilities through execve.
SECURE_NOROOT = 0x1 | 0x2 | 0x40 | 0x80
CAPABILITY_VERSION_3 = 0x20080522

# pivot_root has no libc wrapper; its number by architecture (the generic table's elsewhere).
SYS_PIVOT_ROOT = {"x86_64": 155, "i686": 217, "i386": 217, "ppc64le": 203, "ppc64": 203, "s390x": 217}.get(platform.machine(), 41)

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# Candidates run as UID_BASE + their supervisor's pid when the zygote is root: live
# candidates never share a uid, so RLIMIT_NPROC is per candidate and none can signal another.
UID_BASE = 200000

MAX_PACKET = 1 << 20
# stdout, stderr, report, kill pipe, and the input files.
MAX_INPUTS = 4
MAX_FDS = 4 + MAX_INPUTS

# A standby supervisor and its init get ready at this niceness, so that they take the CPU
# from no job running; each is set back to 0 when it gets its job (which needs root in the
# host's user namespace: a process cannot lower its niceness otherwise). Set in main.
BACKGROUND_NICE = 0

# What a job's tree holds besides the interpreter's and the --keep directories: system
# libraries and tools (read-only), the few files of /etc that libraries read, and a /dev of
# harmless nodes (and GPUs').
SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
ETC_FILES = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ld.so.preload", "localtime", "timezone",
             "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf",
             "protocols", "services", "mime.types", "os-release", "ssl", "ca-certificates",
             "ca-certificates.conf", "pki", "crypto-policies", "alternatives", "fonts", "matplotlibrc"]
DEV_NODES = ["null", "zero", "full", "random", "urandom", "tty"]
DEV_GPU_PREFIXES = ("nvidia", "dri", "kfd")

# A job's /tmp (and work dir), /dev/shm: fresh tmpfs each, bounded in bytes and inodes.
SHM_SIZE = "64m"
SCRATCH_INODES = 65536

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


def prctl(option, arg, arg2=0):
    check(libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg2), 0, 0), "prctl")


def pivot_root(new, old):
    check(libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), new.encode(), old.encode()), "pivot_root")


def umount2(target, flags):
    check(libc.umount2(target.encode(), flags), f"umount {target}")


def loopback_up():
    """Brings lo up in the zygote's new network namespace, so that evaluators may still use
    localhost; nothing else exists there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


class Settings:
    """What every job of this zygote shares: where its tree comes from and its bounds."""

    def __init__(self, args):
        self.keep = [os.path.abspath(k) for k in args.keep]
        self.roots = [os.path.abspath(r) for r in args.root]
        self.scratch_mb = args.scratch_mb
        self.host_root = args.host_root
        # Root of a user namespace of our own: no uid per candidate, capabilities dropped.
        self.userns = not args.host_root and os.geteuid() == 0
        self.cgroup_fd = None
        self.minimal = False  # the zygote moved into the minimal root


def main():
    global BACKGROUND_NICE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--control", type=int, required=True)
    p.add_argument("--harness", default="")
    p.add_argument("--evaluator", default="")
    p.add_argument("--netns", action="store_true")
    p.add_argument("--host-root", action="store_true")
    p.add_argument("--keep", action="append", default=[])
    p.add_argument("--root", action="append", default=[])
    p.add_argument("--spares", type=int, default=0)
    p.add_argument("--scratch-mb", type=int, default=256)
    p.add_argument("--cgroup", default="")
    args = p.parse_args()
    ctl = socket.socket(fileno=args.control)
    cfg = Settings(args)
    if cfg.host_root:
        BACKGROUND_NICE = 19
    # Supervisors are reaped by the kernel; each resets this before forking its init.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ready = {"ready": True, "pid": os.getpid(), "missing": []}
    if args.netns:
        try:
            loopback_up()
        except OSError as e:
            ready["missing"].append(f"loopback in the network namespace ({e.strerror})")
    if args.cgroup:
        # Held, so that supervisors place jobs from inside the minimal root.
        cfg.cgroup_fd = os.open(args.cgroup, os.O_RDONLY | os.O_DIRECTORY)
    # The tree first, the evaluator's import second: the import then sees what jobs see, and
    # no thread it starts stands in the way of unshare.
    try:
        enter_minimal_root(cfg, interpreter_dirs(), ready["missing"])
        cfg.minimal = True
    except OSError as e:
        ready["missing"].append(f"minimal root ({e}): jobs see the host's file system, read-only")
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
    Zygote(ctl, state, cfg, args.spares).serve()


def send(ctl, msg):
    ctl.send(json.dumps(msg).encode())


class Zygote:
    """Hands each job to a standby: a supervisor forked ahead with its namespaces made, and
    its init with the mount tree prepared, so that a job pays for neither. init gets the
    job's pipes, the supervisor the kill pipe. It keeps `spares` of them ready (none: one is
    forked when a job comes, the cold path's case)."""

    def __init__(self, ctl, state, cfg, spares):
        self.ctl, self.state, self.cfg, self.spares = ctl, state, cfg, spares
        self.pid = os.getpid()
        self.standby = collections.deque()

    def serve(self):
        # What the zygote holds now is shared with every job: keep the collector from
        # touching it in them, which would copy each page it lives on.
        gc.freeze()
        for _ in range(self.spares):
            self.fork_standby()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.ctl, MAX_PACKET, MAX_FDS)
            except InterruptedError:
                continue
            if not data:
                return  # Go closed the socket: shut down; supervisors die with us (PDEATHSIG)
            try:
                self.dispatch(data, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            while len(self.standby) < self.spares:
                self.fork_standby()

    def dispatch(self, data, fds):
        sys.stdout.flush()
        sys.stderr.flush()
        if len(fds) < 4:
            send(self.ctl, {"id": json.loads(data)["id"], "error": f"job came with {len(fds)} file descriptors, want at least 4"})
            return
        for _ in range(3):
            if not self.standby:
                self.fork_standby(fds)
            sup, init, pid = self.standby.popleft()
            try:
                if BACKGROUND_NICE:
                    os.setpriority(os.PRIO_PROCESS, pid, 0)
                # init gets the pipes and inputs, the supervisor the kill pipe; both at once.
                socket.send_fds(init, [data], fds[:3] + fds[4:])
            except OSError:
                continue  # that standby died getting ready: the next one
            finally:
                init.close()
            try:
                socket.send_fds(sup, [data], fds[3:4])
                return
            except OSError:
                break  # its init dies with it (PDEATHSIG)
            finally:
                sup.close()
        send(self.ctl, {"id": json.loads(data)["id"], "error": "no supervisor could be started"})

    def fork_standby(self, job_fds=()):
        """Forks a supervisor that gets ready and waits for a job; job_fds are the pipes of a
        job in hand, which it must not hold (it gets them again with the job)."""
        sup_ours, sup_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        init_ours, init_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sup_ours.close()
                init_ours.close()
                for sup, init, _ in self.standby:
                    sup.close()
                    init.close()
                if BACKGROUND_NICE:
                    os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICE)
                for fd in job_fds:
                    os.close(fd)
                supervise(self.ctl, self.pid, sup_theirs, init_theirs, self.state, self.cfg)
            except BaseException:
                traceback.print_exc()
                code = 70
            os._exit(code)
        sup_theirs.close()
        init_theirs.close()
        self.standby.append((sup_ours, init_ours, pid))


def supervise(ctl, zygote, chan, init_chan, state, cfg):
    """A job's trusted supervisor. Before the job: make the mount, pid and IPC namespaces and
    fork init, which prepares the mount tree and waits for the job on init_chan. Then, as the
    job comes (to init and, with the kill pipe, to us): watch it and reply."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:
        os._exit(1)
    missing = []
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        missing.append("child subreaper")
    pidns = mntns = False
    for flags, name in ((CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC, "all"), (CLONE_NEWNS, "mount")):
        try:
            unshare(flags)
            mntns, pidns = True, name == "all"
            break
        except OSError:
            continue
    if not pidns:
        missing.append("pid namespace (descendants are found through the subreaper instead)")
    if not mntns:
        missing.append("mount namespace (no private /tmp, bundle and file system writable as far as file modes allow)")
    else:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    uid = UID_BASE + os.getpid() if cfg.host_root else None
    if uid is None:
        missing.append("a uid of its own per candidate (the service is not root: jobs run as its uid"
                       + (", without capabilities, in a user namespace)" if cfg.userns else ")"))
    # placed: with a cgroup, init waits until we have moved it there.
    placed_r, placed_w = os.pipe()
    # done: init says the evaluation returned and waits on go, so that what it left running
    # can be counted before its exit kills the namespace.
    done_r, done_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 71
        try:
            ctl.close()
            chan.close()
            for fd in (done_r, go_w, placed_w):
                os.close(fd)
            init(init_chan, state, cfg, mntns, pidns, uid, done_w, go_r, placed_r)
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    for fd in (done_w, go_r, placed_r):
        os.close(fd)
    init_chan.close()
    if BACKGROUND_NICE:
        os.setpriority(os.PRIO_PROCESS, 0, 0)

    try:
        data, fds, _, _ = socket.recv_fds(chan, MAX_PACKET, MAX_FDS)
    except OSError:
        data, fds = b"", []
    chan.close()
    if not data:
        os._exit(0)  # the zygote is closing
    start = time.monotonic()
    if BACKGROUND_NICE:
        os.setpriority(os.PRIO_PROCESS, pid, 0)
    job = json.loads(data)
    try:
        watch_job(ctl, job, fds, pid, uid, start, missing, pidns, placed_w, done_r, go_w, cfg)
    except BaseException as exc:  # a bug of ours: say so rather than leave Go waiting
        send(ctl, {"id": job["id"], "error": f"supervisor: {type(exc).__name__}: {exc}"})
        raise


def watch_job(ctl, job, fds, pid, uid, start, missing, pidns, placed_w, done_r, go_w, cfg):
    """Places init in the job's cgroup, watches it and replies."""
    reply = {"id": job["id"], "missing": missing}
    if len(fds) != 1:
        reply["error"] = "job came without its kill pipe"
        send(ctl, reply)
        return
    kill_r = fds[0]
    cg = job.get("cgroup")
    if cg:
        try:
            # cg is the job's cgroup below the one the zygote holds open.
            fd = os.open(os.path.join(cg, "cgroup.procs"), os.O_WRONLY, dir_fd=cfg.cgroup_fd)
            try:
                os.write(fd, str(pid).encode())
            finally:
                os.close(fd)
        except (OSError, TypeError) as e:
            missing.append(f"cgroup ({e})")
        try:
            os.write(placed_w, b"p")
        except OSError:
            pass  # init died: its exit status says how
    os.close(placed_w)
    timeout = job.get("timeout", 0)
    ended, left, killed, usage = watch(pid, start + timeout if timeout > 0 else None, done_r, go_w, kill_r, pidns)
    reply.update({"pid": pid, "uid": uid, "left": left, "output_limit": killed, "timed_out": not ended and not killed})
    if ended == "done":
        # init wrote its report, closed its pipes and waits to be let go: reply now, and
        # let it exit (which kills what it left) off the job's path.
        reply.update({"exit": 0, "wall": time.monotonic() - start, "cpu": usage})
        send(ctl, reply)
        release(go_w)
        os.wait4(pid, 0)
        reap_all()
        return
    if not ended:
        os.kill(pid, signal.SIGKILL)
    _, status, ru = os.wait4(pid, 0)
    reply.update({"wall": time.monotonic() - start, "cpu": ru.ru_utime + ru.ru_stime})
    reap_all()
    if os.WIFSIGNALED(status):
        reply["exit"], reply["signal"] = -1, os.WTERMSIG(status)
    else:
        reply["exit"] = os.WEXITSTATUS(status)
    send(ctl, reply)


def release(go_w):
    try:
        os.write(go_w, b"g")
    except OSError:
        pass
    os.close(go_w)


def watch(pid, deadline, done_r, go_w, kill_r, pidns):
    """Waits for init to exit or say it is done, the deadline, or Go's kill request (the
    output limit).

    Returns (ended, left, killed, cpu): ended is True when init exited on its own, "done"
    when it finished its evaluation and waits on go (left: how many processes it had left
    running then, counted before its exit kills them; cpu: its CPU time so far), False
    otherwise; killed says whether Go asked for the kill."""
    pidfd = os.pidfd_open(pid)
    watched = [pidfd, done_r, kill_r]
    try:
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return False, 0, False, None
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if pidfd in ready:
                return True, 0, False, None
            if kill_r in ready:
                if os.read(kill_r, 1):
                    return False, 0, True, None
                watched.remove(kill_r)  # Go closed it: nothing more to ask
            if done_r in ready:
                if os.read(done_r, 1):
                    left, cpu = count_left(pid, pidns)
                    return "done", left, False, cpu
                watched.remove(done_r)
    finally:
        for fd in (pidfd, done_r, kill_r):
            os.close(fd)


def count_left(init_pid, pidns):
    """How many processes other than init still run in the job, and init's CPU time (its
    own and its reaped children's): from the job's own /proc (init mounted it in the mount
    namespace we share; we are not in its pid namespace, so /proc/self resolves to nothing
    there), or else from our descendants, found through the subreaper's children lists."""
    private = False
    if pidns:
        try:
            os.readlink("/proc/self")
        except OSError:
            private = True
    if private:
        init_proc = 1
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and p != "1"]
    else:
        init_proc = init_pid
        pids, todo = [], [os.getpid()]
        while todo:
            parent = todo.pop()
            try:
                with open(f"/proc/{parent}/task/{parent}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                kids = []
            todo.extend(kids)
            pids.extend(k for k in kids if k != init_pid)
    n = 0
    for p in pids:
        stat = proc_stat(p)
        if stat and stat[0] not in ("Z", "X"):
            n += 1
    cpu = None
    stat = proc_stat(init_proc)
    if stat:
        cpu = sum(int(v) for v in stat[11:15]) / os.sysconf("SC_CLK_TCK")
    return n, cpu


def proc_stat(pid):
    """The fields of /proc/pid/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


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


def init(chan, state, cfg, mntns, pidns, uid, done_w, go_r, placed_r):
    """The job's process: pid 1 of its pid namespace. It mounts its scratch before the job
    comes, then makes the work dir there, copies the inputs in, confines itself and runs the
    job."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    notes = []
    scratch, broken = False, None
    if mntns:
        try:
            prepare_scratch(cfg, pidns, notes)
            scratch = True
        except BaseException:
            broken = traceback.format_exc()
    if BACKGROUND_NICE:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    data, fds, _, _ = socket.recv_fds(chan, MAX_PACKET, MAX_FDS)
    if not data:
        os._exit(0)
    chan.close()
    if cfg.cgroup_fd is not None:
        os.close(cfg.cgroup_fd)  # the zygote's, not the candidate's
    job = json.loads(data)
    if job.get("cgroup"):
        os.read(placed_r, 1)  # anything of the candidate's runs in its cgroup
    os.close(placed_r)
    out, err, report = fds[:3]
    inputs = fds[3:]
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (null, out, err):
        os.close(fd)
    if broken:  # never run a job unconfined
        print("sandbox: preparing the job's file system failed:\n" + broken, file=sys.stderr, flush=True)
        os._exit(71)
    for fd in (report, done_w, go_r):
        os.set_inheritable(fd, False)  # commands the candidate runs do not get them
    work = job["workdir"]
    made = [work]
    if scratch:
        os.makedirs(work, mode=0o700, exist_ok=True)
    for name, fd in zip(job.get("inputs", []), inputs):
        if scratch:  # else Go's copy is the work dir's already
            path = os.path.join(work, os.path.basename(name))
            copy_input(fd, path)
            made.append(path)
    for fd in inputs:
        os.close(fd)
    for limit, value in job.get("rlimits", {}).items():
        try:
            resource.setrlimit(getattr(resource, limit), (value, value))
        except (ValueError, OSError) as e:
            notes.append(f"{limit}: {e}")
    os.chdir(work)
    if uid is not None:
        for path in made:
            os.chown(path, uid, uid)
    drop_privileges(cfg, uid, job.get("max_procs", 256), notes)
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
    # Close our ends of the pipes, so that Go sees them end as soon as nothing the candidate
    # left holds them; tell the supervisor we are done, so that it counts what the
    # evaluation left running and replies; then exit when it lets us go, which kills the
    # rest. Threads or atexit handlers left behind must not hold the result back.
    try:
        os.close(report)
        null = os.open("/dev/null", os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.write(done_w, b"d")
        os.read(go_r, 1)
    except OSError:
        pass
    os._exit(0)


def copy_input(src, path):
    """Copies what Go passed as a descriptor (the candidate's program) into the work dir."""
    dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while True:
            chunk = os.read(src, 1 << 20)
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view):]
    finally:
        os.close(dst)


def drop_privileges(cfg, uid, max_procs, notes):
    """Leaves the job no way to privileges: an empty capability bounding set and
    no-root securebits (so that uid 0 of a user namespace regains nothing by execve), its own
    uid when the service is root, RLIMIT_NPROC, no capabilities, no_new_privs."""
    if cfg.host_root or cfg.userns:
        for cap in range(64):
            if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
                break  # EINVAL: past the last capability this kernel has
        libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
        try:
            prctl(PR_SET_SECUREBITS, SECURE_NOROOT)
        except OSError as e:
            notes.append(f"securebits: {e.strerror}")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if uid is not None or cfg.userns:
        # Per uid: the candidate's own, or that of the user namespace (its own count).
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_procs, max_procs))
        except (ValueError, OSError) as e:
            notes.append(f"RLIMIT_NPROC: {e}")
    if cfg.host_root or cfg.userns:
        clear_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def clear_capabilities():
    header = CapHeader(CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    check(libc.capset(ctypes.byref(header), data), "capset")


def prepare_scratch(cfg, pidns, notes):
    """Mounts a job's own writable places before the job comes: /proc of its pid namespace,
    a fresh tmpfs on /tmp bounded by --scratch-mb (where the work dirs are made; one more on
    each --root outside /tmp) and /dev/shm. The --keep directories under /tmp are bound back
    on top, read-only, from descriptors taken before /tmp was covered."""
    if not cfg.minimal:
        read_only(notes)
    if pidns:
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as e:
            notes.append(f"private /proc: {e.strerror}")
    held = {}
    for k in top_level(cfg.keep):
        if within(k, "/tmp"):
            try:
                held[k] = os.open(k, os.O_PATH | os.O_DIRECTORY)
            except OSError as e:
                notes.append(f"keep {k}: {e.strerror}")
    size = f"size={cfg.scratch_mb}m,nr_inodes={SCRATCH_INODES}"
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
    for k in sorted(held, key=len):
        try:
            os.makedirs(k, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{held[k]}", k, None, MS_BIND | MS_REC)
            set_read_only(k)
        finally:
            os.close(held[k])
    try:
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={SHM_SIZE},mode=1777")
    except OSError as e:
        notes.append(f"private /dev/shm: {e.strerror}")
    for r in cfg.roots:
        if not within(r, "/tmp"):
            mount("tmpfs", r, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=0755")


def set_read_only(path):
    """Makes the mount at path, and those below it, read-only."""
    try:
        mount_setattr(path, MOUNT_ATTR_RDONLY, 0)
        return
    except OSError:
        pass
    flags = os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def enter_minimal_root(cfg, interpreter, notes):
    """Builds the tree every job sees, in a mount namespace of the zygote's own, and moves
    the zygote into it: a small tmpfs holding, read-only, the system directories and the
    interpreter's (binds of the host's), a few files of /etc, a /dev of harmless nodes, the
    --keep directories, /proc and /sys; and mount points for the jobs' scratch. Nothing else
    of the host exists there: not its homes, state dirs or logs. Supervisors copy this tree
    (a handful of mounts) into each job's mount namespace."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    binds, links = set(), {}

    def add(path):
        path = os.path.abspath(path)
        real = os.path.realpath(path)
        if not os.path.exists(real):
            return
        # Each symlink on the way is made again in the tree, so that the path works there.
        current = ""
        for part in path.split("/")[1:]:
            current += "/" + part
            if os.path.islink(current):
                links[current] = os.readlink(current)
                add(os.path.realpath(current))
        binds.add(real)

    for d in SYSTEM_DIRS + ["/etc/" + f for f in ETC_FILES] + cfg.keep + interpreter:
        add(d)
    chosen = top_level(binds)
    # A link inside a bound directory is there already (and the bind is the host's).
    links = {p: t for p, t in links.items() if not any(within(p, c) for c in chosen)}
    held = {}
    for path in chosen:
        try:
            held[path] = os.open(path, os.O_PATH | os.O_NOFOLLOW)
        except OSError as e:
            notes.append(f"keep {path}: {e.strerror}")
    dev = {}
    for name in DEV_NODES + [n for n in sorted(os.listdir("/dev")) if n.startswith(DEV_GPU_PREFIXES)]:
        try:
            dev[name] = os.open("/dev/" + name, os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            pass
    special = {d: os.open(d, os.O_PATH | os.O_DIRECTORY) for d in ("/proc", "/sys") if os.path.isdir(d)}

    new = next(d for d in ("/tmp", "/mnt", "/var/tmp", "/") if os.path.isdir(d))
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    # Links first, in the bare tmpfs, so that nothing is ever written through a bind.
    for path in sorted(links, key=len):
        try:
            os.makedirs(new + os.path.dirname(path), mode=0o755, exist_ok=True)
            os.symlink(links[path], new + path)
        except OSError as e:
            notes.append(f"link {path}: {e.strerror}")
    for path in sorted(held, key=len):
        bind_point(new + path, held[path], MS_REC)
    os.makedirs(new + "/dev", mode=0o755)
    mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name, fd in dev.items():
        bind_point(new + "/dev/" + name, fd, MS_REC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, new + "/dev/" + name)
    os.makedirs(new + "/dev/shm", mode=0o1777)
    for d, fd in special.items():
        bind_point(new + d, fd, MS_REC)
    os.makedirs(new + "/tmp", mode=0o1777, exist_ok=True)
    for r in cfg.roots:
        if not within(r, "/tmp"):
            os.makedirs(new + r, mode=0o755, exist_ok=True)
    old = new + "/.old-root"
    os.mkdir(old)
    try:
        pivot_root(new, old)
        os.chdir("/")
        umount2("/.old-root", MNT_DETACH)
        os.rmdir("/.old-root")
    except OSError as e:
        # pivot_root refuses an initramfs root: move the tree over / and chroot, which the
        # job (no capabilities) cannot leave.
        notes.append(f"pivot_root ({e.strerror}): the host's tree stays mounted below the job's root")
        os.rmdir(old)
        os.chdir(new)
        mount(new, "/", None, MS_MOVE)
        os.chroot(".")
        os.chdir("/")
    try:
        mount_setattr("/", MOUNT_ATTR_RDONLY, 0)
    except OSError:
        read_only(notes)
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def bind_point(point, fd, flags):
    """Binds what fd holds (a directory or a file) at point, made in the new tree."""
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(point, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(point), mode=0o755, exist_ok=True)
            os.close(os.open(point, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
        mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | flags)
    finally:
        os.close(fd)


def top_level(paths):
    """paths without those inside another one of them."""
    out = []
    for p in sorted(set(paths)):
        if not any(within(p, o) for o in out):
            out.append(p)
    return out


def within(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_only(notes):
    """Makes every mount read-only but /proc and /dev (and what is below them): in three
    system calls where the kernel has mount_setattr (5.12), else one remount per mount."""
    points = mounts()
    try:
        mount_setattr("/", MOUNT_ATTR_RDONLY, 0)
        for point, _ in points:
            if point in ("/proc", "/dev"):
                mount_setattr(point, 0, MOUNT_ATTR_RDONLY)
        return
    except OSError:
        pass
    for point, opts in points:
        if point == "/proc" or point.startswith("/proc/") or point == "/dev" or point.startswith("/dev/"):
            continue
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | opts)
        except OSError as e:
            notes.append(f"read-only {point}: {e.strerror}")


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path, attr_set, attr_clr):
    """Sets and clears mount attributes of path and every mount below it."""
    attr = MountAttr(attr_set, attr_clr, 0, 0)
    ret = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                       ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    check(ret, f"mount_setattr {path}")


def interpreter_dirs():
    """The interpreter's prefix and import path, which every job reads."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    dirs.update(p for p in sys.path if p)
    return sorted(d for d in dirs if os.path.isdir(d))


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
