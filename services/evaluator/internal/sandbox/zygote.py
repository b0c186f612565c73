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
    zygote -> Go   {"id": N, "exit": code, "signal": n, "timed_out": bool, "left": n, ...}

First, in a mount namespace of its own, the zygote builds the minimal root that every job
sees and moves into it (pivot_root): the interpreter and the system libraries, a few files
of /etc, a /dev of a few nodes, the --keep directories (bundle, harness), all read-only; the
host's home, state and log directories do not exist there. With --evaluator it then imports
the evaluator (and so its heavy modules) once. It supervises every job itself, from one
select loop, and keeps --spares standbys: each a job's process forked ahead as pid 1 of a
pid namespace of its own, with its mount namespace made (a copy of that small tree), its
scratch mounted and the generic part of a job's path rehearsed, so that a job pays for none
of that:

    zygote (pid 1 of its own pid namespace, in the minimal root; trusted: never runs
    candidate code) --setns/unshare(pid), fork--> init (pid 1 of a new pid namespace)
            unshare(mount, ipc); its own /proc; a fresh size-limited tmpfs on /tmp (the work
            dirs live there, or on one of their own for --root dirs outside /tmp) and
            /dev/shm; rehearsal; waits for the job
    job: zygote --> init (the pipes, the inputs); the kill pipe stays with the zygote
            init makes the work dir and copies the inputs (the candidate's program) into it;
            rlimits; clean environment; its own uid (--host-root) or no capabilities (a user
            namespace); no_new_privs; then exec the command, or run evaluate(), write the
            report, close its pipes and tell the zygote it is done
        the zygote watches init's pidfd with the wall-clock limit (SIGKILL past it) and the
        kill pipe from Go (the output limit); when init says it is done, it counts the
        processes init left running, replies, and lets init exit: the kernel then kills
        every process of the pid namespace, setsid or not

The report travels over a pipe whose write end only init and its descendants hold; the
zygote's reply, which the candidate cannot reach, carries what the kernel says (exit
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


def last_cap():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


LAST_CAP = last_cap()

# pivot_root has no libc wrapper; its number by architecture (the generic table's elsewhere).
SYS_PIVOT_ROOT = {"x86_64": 155, "i686": 217, "i386": 217, "ppc64le": 203, "ppc64": 203, "s390x": 217}.get(platform.machine(), 41)

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

MAX_PACKET = 1 << 20
# stdout, stderr, report, kill pipe, and the input files.
MAX_INPUTS = 4
MAX_FDS = 4 + MAX_INPUTS

# A standby gets ready at this niceness, so that it takes the CPU from no job running; it
# is set back to 0 when it gets its job (which needs root in the
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
        self.mntns = False  # mount namespaces can be made (for the jobs too)
        self.pidns_fd = None  # our own pid namespace, when jobs get one each


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
    # Standbys that die before the serve loop are reaped by the kernel; it resets this.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ready = {"ready": True, "pid": os.getpid(), "missing": []}
    if args.netns:
        try:
            loopback_up()
        except OSError as e:
            ready["missing"].append(f"loopback in the network namespace ({e.strerror})")
    if args.cgroup:
        # Held, so that the zygote places jobs in cgroups from inside the minimal root.
        cfg.cgroup_fd = os.open(args.cgroup, os.O_RDONLY | os.O_DIRECTORY)
    # The tree first, the evaluator's import second: the import then sees what jobs see, and
    # no thread it starts stands in the way of unshare.
    try:
        enter_minimal_root(cfg, interpreter_dirs(), ready["missing"])
        cfg.minimal = True
    except OSError as e:
        ready["missing"].append(f"minimal root ({e}): jobs see the host's file system, read-only")
    if not cfg.mntns:
        ready["missing"].append("mount namespace (no private /tmp or work dir tmpfs; the file system is writable as far as file modes allow)")
    try:
        fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        setns(fd, CLONE_NEWPID)
        unshare(CLONE_NEWPID)  # the probe's namespace is dropped by the first standby's setns
        cfg.pidns_fd = fd
    except OSError as e:
        ready["missing"].append(f"pid namespace ({e.strerror}): a job's processes are found and killed by session instead")
    if not cfg.host_root:
        ready["missing"].append("a uid of its own per candidate (the service is not root: jobs run as its uid"
                                + (", without capabilities, in a user namespace)" if cfg.userns else ")"))
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


class Standby:
    """A job's init forked ahead: pid 1 of a pid namespace of its own, mounting its scratch or
    waiting for its job on chan."""

    __slots__ = ("pid", "pidfd", "chan", "done_r", "go_w", "placed_w", "pidns")


class Job:
    """A job handed to a standby, which the zygote watches until it replied and reaped it."""

    __slots__ = ("id", "sb", "kill_r", "start", "deadline", "uid", "killed", "timed_out", "replied", "left", "cpu", "wall")


class Zygote:
    """Serves jobs and supervises them, in one loop: no process of its own per job but the
    job's init, which it forks ahead as a standby (pid namespace made, scratch mounted) and
    hands the job's pipes and inputs. It enforces each job's deadline, kills a job Go asks to
    kill (the output limit), counts what a finished evaluation left running, and replies
    with what the kernel says. It never runs candidate code. It keeps `spares` standbys
    ready, forking them when no event waits (none: one is forked when a job comes, the cold
    path's case)."""

    def __init__(self, ctl, state, cfg, spares):
        self.ctl, self.state, self.cfg, self.spares = ctl, state, cfg, spares
        self.standby = collections.deque()
        self.jobs = {}  # pidfd -> Job
        self.owned = set()  # descriptors of standbys and jobs, which no standby may keep
        self.missing = []  # found while serving (cgroups), sent with every reply

    def serve(self):
        # What the zygote holds now is shared with every job: keep the collector from
        # touching it in them, which would copy each page it lives on.
        gc.freeze()
        # Inits are reaped here, with their exit status and resource use.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        while True:
            watched = [self.ctl]
            deadline = None
            for pidfd, job in self.jobs.items():
                watched.append(pidfd)
                if not job.replied and job.sb.done_r is not None:
                    watched.append(job.sb.done_r)
                if job.kill_r is not None:
                    watched.append(job.kill_r)
                if job.deadline is not None and not job.replied and not job.killed and not job.timed_out:
                    deadline = job.deadline if deadline is None else min(deadline, job.deadline)
            timeout = None if deadline is None else max(0, deadline - time.monotonic())
            if len(self.standby) < self.spares:
                timeout = 0  # a standby is due: fork it unless an event waits
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if not ready and len(self.standby) < self.spares:
                self.fork_standby()
                continue
            for fd in ready:
                if fd is self.ctl:
                    if not self.receive():
                        return  # Go closed the socket: shut down; inits die with us (PDEATHSIG)
                    continue
                job = self.job_of(fd)
                if job is None:
                    continue
                sb = job.sb
                if fd == sb.pidfd:
                    self.finish(job)
                elif fd == sb.done_r:
                    self.done(job)
                elif fd == job.kill_r:
                    if os.read(job.kill_r, 1):
                        job.killed = True
                        kill(sb.pidfd)
                    self.close_fd(job.kill_r)
                    job.kill_r = None
            now = time.monotonic()
            for job in self.jobs.values():
                if job.deadline is not None and now >= job.deadline and not (job.replied or job.killed or job.timed_out):
                    job.timed_out = True
                    kill(job.sb.pidfd)

    def job_of(self, fd):
        job = self.jobs.get(fd)
        if job is not None:
            return job
        for job in self.jobs.values():
            if fd in (job.sb.done_r, job.kill_r):
                return job
        return None

    def receive(self):
        """Takes one job from Go and hands it to a standby; False when Go closed the socket."""
        try:
            data, fds, _, _ = socket.recv_fds(self.ctl, MAX_PACKET, MAX_FDS)
        except InterruptedError:
            return True
        if not data:
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        kill_r = None
        try:
            job = json.loads(data)
            if len(fds) < 4:
                send(self.ctl, {"id": job["id"], "error": f"job came with {len(fds)} file descriptors, want at least 4"})
                return True
            kill_r = fds[3]
            for _ in range(3):
                if not self.standby:
                    self.fork_standby()
                sb = self.standby.popleft()
                try:
                    if BACKGROUND_NICE:
                        os.setpriority(os.PRIO_PROCESS, sb.pid, 0)
                    # init gets the pipes and the inputs; the kill pipe stays here.
                    socket.send_fds(sb.chan, [data], fds[:3] + fds[4:])
                except OSError:
                    self.drop(sb)  # that standby died getting ready: the next one
                    continue
                self.start(job, sb, kill_r)
                kill_r = None
                return True
            send(self.ctl, {"id": job["id"], "error": "no standby could be started"})
            return True
        finally:
            for fd in fds:
                if fd != kill_r and fd not in self.owned:
                    os.close(fd)
            if kill_r is not None:
                os.close(kill_r)

    def start(self, packet, sb, kill_r):
        self.close_fd(sb.chan)
        sb.chan = None
        j = Job()
        j.id, j.sb, j.kill_r, j.uid = packet["id"], sb, kill_r, packet.get("uid")
        self.owned.add(kill_r)
        j.start = time.monotonic()
        timeout = packet.get("timeout", 0)
        j.deadline = j.start + timeout if timeout > 0 else None
        j.killed = j.timed_out = j.replied = False
        j.left, j.cpu, j.wall = 0, None, None
        cg = packet.get("cgroup")
        if cg:
            try:
                # cg is the job's cgroup below the one the zygote holds open.
                fd = os.open(os.path.join(cg, "cgroup.procs"), os.O_WRONLY, dir_fd=self.cfg.cgroup_fd)
                try:
                    os.write(fd, str(sb.pid).encode())
                finally:
                    os.close(fd)
            except (OSError, TypeError) as e:
                self.note(f"cgroup ({e})")
            try:
                os.write(sb.placed_w, b"p")
            except OSError:
                pass  # init died: its exit status says how
        self.close_fd(sb.placed_w)
        sb.placed_w = None
        self.jobs[sb.pidfd] = j

    def done(self, job):
        """init says the evaluation returned and waits: count what it left running, reply,
        and let it exit (which kills the rest) off the job's path."""
        sb = job.sb
        said = os.read(sb.done_r, 1)
        self.close_fd(sb.done_r)
        sb.done_r = None
        if not said or job.killed or job.timed_out:
            return  # it is exiting, or being killed: its exit status will say
        job.left, job.cpu = count_left(sb.pid, sb.pidns)
        job.wall = time.monotonic() - job.start
        self.reply(job, {"exit": 0, "wall": job.wall, "cpu": job.cpu})
        try:
            os.write(sb.go_w, b"g")
        except OSError:
            pass

    def finish(self, job):
        """init ended: reap it, make sure nothing of the job is left, and reply if not yet."""
        sb = job.sb
        _, status, ru = os.wait4(sb.pid, 0)
        if not sb.pidns:
            kill_session(sb.pid)  # its pid namespace would have; its session is what there is
        if not job.replied:
            r = {"wall": time.monotonic() - job.start, "cpu": ru.ru_utime + ru.ru_stime}
            if os.WIFSIGNALED(status):
                r["exit"], r["signal"] = -1, os.WTERMSIG(status)
            else:
                r["exit"] = os.WEXITSTATUS(status)
            self.reply(job, r)
        del self.jobs[sb.pidfd]
        self.drop(sb, reaped=True)
        if job.kill_r is not None:
            self.close_fd(job.kill_r)
            job.kill_r = None

    def reply(self, job, r):
        job.replied = True
        r.update({"id": job.id, "missing": self.missing, "pid": job.sb.pid, "uid": job.uid, "left": job.left,
                  "output_limit": job.killed, "timed_out": job.timed_out and not job.killed})
        try:
            send(self.ctl, r)
        except OSError:
            pass  # Go is gone; so are we, soon

    def note(self, what):
        if what not in self.missing:
            self.missing.append(what)

    def fork_standby(self):
        """Forks a job's init ahead, as pid 1 of a pid namespace of its own; it makes its
        mount namespace, mounts its scratch and waits for a job."""
        sb = Standby()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        done_r, done_w = os.pipe()
        go_r, go_w = os.pipe()
        placed_r, placed_w = os.pipe()
        sb.pidns = False
        if self.cfg.pidns_fd is not None:
            try:
                # Back to our own namespace for children, then a new one: its first child,
                # the fork below, is its pid 1.
                setns(self.cfg.pidns_fd, CLONE_NEWPID)
                unshare(CLONE_NEWPID)
                sb.pidns = True
            except OSError as e:
                self.note(f"pid namespace ({e.strerror}): descendants are found by session instead")
        pid = os.fork()
        if pid == 0:
            code = 71
            try:
                ours.close()
                for fd in [done_r, go_w, placed_w, self.cfg.pidns_fd] + list(self.owned):
                    if fd is not None:
                        os.close(fd)
                self.ctl.close()
                init(theirs, self.state, self.cfg, sb.pidns, done_w, go_r, placed_r)
            except BaseException:
                traceback.print_exc()
            os._exit(code)
        theirs.close()
        for fd in (done_w, go_r, placed_r):
            os.close(fd)
        self.rehearse()
        sb.pid, sb.chan, sb.done_r, sb.go_w, sb.placed_w = pid, ours, done_r, go_w, placed_w
        sb.pidfd = os.pidfd_open(pid)
        self.owned.update((ours.fileno(), done_r, go_w, placed_w, sb.pidfd))
        self.standby.append(sb)

    def rehearse(self):
        """After a fork the zygote pays, as its child does, for the first write to each page
        they share. Forks happen when no event waits: walk the loop's own path now (a
        packet, a reply, the bookkeeping), so that the next job's pages are copied already."""
        job = json.loads(REHEARSAL_PACKET)
        r = {"id": job["id"], "missing": self.missing, "pid": 0, "uid": None, "left": 0, "output_limit": False,
             "timed_out": False, "exit": 0, "wall": time.monotonic(), "cpu": 0.0}
        json.dumps(r).encode()
        select.select([], [], [], 0)
        proc_stat(os.getpid())

    def drop(self, sb, reaped=False):
        """Forgets a standby (or a finished job's init, reaped); one still alive is killed
        and reaped."""
        if sb.chan is not None:
            self.close_fd(sb.chan)
            sb.chan = None
        for name in ("done_r", "go_w", "placed_w"):
            fd = getattr(sb, name)
            if fd is not None:
                self.close_fd(fd)
                setattr(sb, name, None)
        if sb.pidfd is not None:
            if not reaped:
                kill(sb.pidfd)
                try:
                    os.waitpid(sb.pid, 0)
                except ChildProcessError:
                    pass
            self.close_fd(sb.pidfd)
            sb.pidfd = None

    def close_fd(self, fd):
        if isinstance(fd, socket.socket):
            self.owned.discard(fd.fileno())
            fd.close()
            return
        self.owned.discard(fd)
        os.close(fd)


def kill(pidfd):
    """SIGKILLs a child through its pidfd, which never names a process that reused its pid."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


def setns(fd, nstype):
    check(libc.setns(fd, nstype), "setns")


def count_left(init_pid, pidns):
    """How many processes other than init still run in the job, and init's CPU time (its
    own and its reaped children's). In a pid namespace, every process of the job is init's
    descendant or, orphaned, its child; without one, the job's processes are those of its
    session (init called setsid)."""
    if pidns:
        pids, todo = [], [init_pid]
        while todo:
            parent = todo.pop()
            kids = []
            try:
                for tid in os.listdir(f"/proc/{parent}/task"):
                    with open(f"/proc/{parent}/task/{tid}/children") as f:
                        kids.extend(int(k) for k in f.read().split())
            except OSError:
                pass
            todo.extend(kids)
            pids.extend(kids)
    else:
        pids = [p for p in session_members(init_pid) if p != init_pid]
    n = 0
    for p in pids:
        stat = proc_stat(p)
        if stat and stat[0] not in ("Z", "X"):
            n += 1
    cpu = None
    stat = proc_stat(init_pid)
    if stat:
        cpu = sum(int(v) for v in stat[11:15]) / os.sysconf("SC_CLK_TCK")
    return n, cpu


def session_members(sid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            stat = proc_stat(int(p))
            if stat and len(stat) > 3 and stat[3] == str(sid):
                out.append(int(p))
    return out


def kill_session(sid):
    """Kills what is left of a job that had no pid namespace: its session's processes."""
    for p in session_members(sid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def proc_stat(pid):
    """The fields of /proc/pid/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def init(chan, state, cfg, pidns, done_w, go_r, placed_r):
    """The job's process: pid 1 of its pid namespace. It makes its mount and IPC namespaces
    and mounts its scratch before the job comes, then makes the work dir there, copies the
    inputs in, confines itself and runs the job."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if BACKGROUND_NICE:
        os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICE)
    notes = []
    scratch, broken = False, None
    if cfg.mntns:
        try:
            try:
                unshare(CLONE_NEWNS | CLONE_NEWIPC)
            except OSError:
                unshare(CLONE_NEWNS)
                notes.append("IPC namespace")
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            prepare_scratch(cfg, pidns, notes)
            scratch = True
        except BaseException:
            broken = traceback.format_exc()
    if not broken:
        rehearse(state is not None, scratch)
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
    uid = job.get("uid") if cfg.host_root else None
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
    # left holds them; tell the zygote we are done, so that it counts what the
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


REHEARSAL_PACKET = json.dumps({"id": 0, "kind": "evaluate", "program": "/tmp/program.py", "workdir": "/tmp",
                               "env": {"PATH": "/usr/bin", "HOME": "/tmp"}, "rlimits": {"RLIMIT_CORE": 0}, "timeout": 1.0})


def rehearse(evaluation, scratch):
    """Walks, before the job comes, the generic part of a job's path: parsing its packet,
    setting its environment, what the harness does with a result, and loading a module from
    a file as evaluators load the candidate. A forked process pays for the first write to
    each page it shares with the zygote (the page is copied), which on some virtual machines
    costs tens of microseconds a page; copied now, those pages cost the job nothing. It runs
    no code of the evaluator's or the candidate's, and leaves no trace but copied pages."""
    try:
        os.environ.update(json.loads(REHEARSAL_PACKET)["env"])
        os.environ.clear()
        if not evaluation:
            return
        import harness
        import types
        libc.getpid()  # ctypes' call path, which drop_privileges takes
        resource.getrlimit(resource.RLIMIT_CORE)
        dummy = types.SimpleNamespace(
            evaluate=lambda path: {"combined_score": 1.0},
            evaluate_stage1=lambda path: {"combined_score": 1.0},
            evaluate_stage2=lambda path: {"combined_score": 0.5, "note": "rehearsal"})
        for cascade in (True, False):
            json.dumps(harness.run(dummy, "/tmp/.shoal-rehearsal.py", cascade, [0.5]), allow_nan=False)
        if scratch:
            import importlib.util
            path = "/tmp/.shoal-rehearsal.py"
            with open(path, "w") as f:
                f.write("def solve():\n    return 1.0\n")
            spec = importlib.util.spec_from_file_location("rehearsal", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.solve()
            os.unlink(path)
    except Exception:
        pass  # a rehearsal only saves time


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
        for cap in range(LAST_CAP + 1):
            libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
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
    of the host exists there: not its homes, state dirs or logs. Standbys copy this tree
    (a handful of mounts) into each job's mount namespace."""
    unshare(CLONE_NEWNS)
    cfg.mntns = True
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
    special = {d: os.open(d, os.O_PATH | os.O_DIRECTORY) for d in ("/sys",) if os.path.isdir(d)}

    new = next(d for d in ("/tmp", "/mnt", "/var/tmp", "/") if os.path.isdir(d))
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    try:
        build_tree(new, links, held, dev, special, cfg, notes)
    except BaseException:
        umount2(new, MNT_DETACH)  # the zygote goes on in the host's tree
        raise
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


def build_tree(new, links, held, dev, special, cfg, notes):
    """Fills the new root's tmpfs: links, binds (from descriptors held), /dev, /sys, /proc
    and the mount points of the jobs' scratch."""
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
    # A /proc of the zygote's own pid namespace (it finds its jobs' processes there), mounted
    # while the host's is still in the tree: a user namespace may mount proc only where a
    # fully visible one exists.
    os.makedirs(new + "/proc", mode=0o555)
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(new + "/tmp", mode=0o1777, exist_ok=True)
    for r in cfg.roots:
        if not within(r, "/tmp"):
            os.makedirs(new + r, mode=0o755, exist_ok=True)


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
