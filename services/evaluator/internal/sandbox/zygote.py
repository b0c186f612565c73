"""shoal's sandbox zygote: a prepared Python process that forks one confined child per job.

    python3 zygote.py --control FD [--harness DIR --evaluator PATH] [--netns]
                      [--keep DIR]... [--root DIR]... [--spares N]

The Go side (zygote.go) starts it, in a fresh network namespace where the kernel allows, and
speaks over a SOCK_SEQPACKET socket at FD: one JSON packet per message.

    zygote -> Go   {"ready": true, "pid": N, "error": "...", "traceback": "...", "missing": [...]}
    Go -> zygote   {"id": N, "kind": "exec"|"evaluate", ...} with the write ends of three pipes
                   (stdout, stderr, report) and the read end of a kill pipe as SCM_RIGHTS
    supervisor -> Go  {"id": N, "exit": code, "signal": n, "timed_out": bool, "left": n, ...}

With --evaluator the zygote imports the evaluator (and so its heavy modules) once, before
any job. It keeps --spares supervisors on standby, each forked ahead with its namespaces
made and its init's mount tree prepared (--keep: directories every job reads; --root: where
the jobs' own directories live), so that a job pays for none of that:

    zygote --fork--> supervisor (trusted; never runs candidate code), ahead of the job
        unshare(mount, pid, ipc namespaces); child subreaper
        --fork--> init (pid 1 of the new pid namespace)
            every mount read-only, private /tmp, /dev/shm and /proc, the --keep dirs bound
            back read-only; waits for the job
    job: zygote --> init (the pipes) and its supervisor (the kill pipe), both at once
            init binds the work dir (writable); rlimits; clean environment; its own uid (root
            only); no_new_privs; then exec the command, or run evaluate(), write the report,
            close its pipes and tell the supervisor it is done
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

SYS_MOUNT_SETATTR = 442  # the same on every architecture (the generic syscall table)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

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
MAX_FDS = 4

# A standby supervisor and its init get ready at this niceness, so that they take the CPU
# from no job running; each is set back to 0 when it gets its job (which needs root: a
# process cannot lower its niceness otherwise).
BACKGROUND_NICE = 19 if os.geteuid() == 0 else 0

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
    p.add_argument("--keep", action="append", default=[])
    p.add_argument("--root", action="append", default=[])
    p.add_argument("--spares", type=int, default=0)
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
    Zygote(ctl, state, args.keep, args.root, args.spares).serve()


def send(ctl, msg):
    ctl.send(json.dumps(msg).encode())


class Zygote:
    """Hands each job to a standby: a supervisor forked ahead with its namespaces made, and
    its init with the mount tree prepared, so that a job pays for neither. init gets the
    job's pipes, the supervisor the kill pipe. It keeps `spares` of them ready (none: one is
    forked when a job comes, the cold path's case)."""

    def __init__(self, ctl, state, keep, roots, spares):
        self.ctl, self.state, self.keep, self.roots, self.spares = ctl, state, keep, roots, spares
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
        if len(fds) != 4:
            send(self.ctl, {"id": json.loads(data)["id"], "error": f"job came with {len(fds)} file descriptors, want 4"})
            return
        for _ in range(3):
            if not self.standby:
                self.fork_standby(fds)
            sup, init, pid = self.standby.popleft()
            try:
                if BACKGROUND_NICE:
                    os.setpriority(os.PRIO_PROCESS, pid, 0)
                # init gets the pipes, the supervisor the kill pipe; both at once.
                socket.send_fds(init, [data], fds[:3])
            except OSError:
                continue  # that standby died getting ready: the next one
            finally:
                init.close()
            try:
                socket.send_fds(sup, [data], fds[3:])
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
                supervise(self.ctl, self.pid, sup_theirs, init_theirs, self.state, self.keep, self.roots)
            except BaseException:
                traceback.print_exc()
                code = 70
            os._exit(code)
        sup_theirs.close()
        init_theirs.close()
        self.standby.append((sup_ours, init_ours, pid))


def supervise(ctl, zygote, chan, init_chan, state, keep, roots):
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
    uid = UID_BASE + os.getpid() if os.geteuid() == 0 else None
    if uid is None:
        missing.append("a uid of its own per candidate (the service is not root)")
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
            init(init_chan, state, mntns, pidns, uid, keep, roots, done_w, go_r, placed_r)
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
        watch_job(ctl, job, fds, pid, uid, start, missing, pidns, placed_w, done_r, go_w)
    except BaseException as exc:  # a bug of ours: say so rather than leave Go waiting
        send(ctl, {"id": job["id"], "error": f"supervisor: {type(exc).__name__}: {exc}"})
        raise


def watch_job(ctl, job, fds, pid, uid, start, missing, pidns, placed_w, done_r, go_w):
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
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as e:
            missing.append(f"cgroup ({e.strerror})")
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


def init(chan, state, mntns, pidns, uid, keep, roots, done_w, go_r, placed_r):
    """The job's process: pid 1 of its pid namespace. It prepares the mount tree before the
    job comes, then binds the job's work dir into it, confines itself and runs the job."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    notes = []
    tree, broken = None, None
    if mntns:
        try:
            tree = FileTree(keep, roots, pidns, notes)
        except BaseException:
            broken = traceback.format_exc()
    if BACKGROUND_NICE:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    data, fds, _, _ = socket.recv_fds(chan, MAX_PACKET, MAX_FDS)
    if not data:
        os._exit(0)
    chan.close()
    job = json.loads(data)
    if job.get("cgroup"):
        os.read(placed_r, 1)  # anything of the candidate's runs in its cgroup
    os.close(placed_r)
    out, err, report = fds
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
    if tree:
        tree.bind(work, True)
        for path in job.get("keep", []):
            tree.bind(path, False)
        tree.close()
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


class FileTree:
    """The job's view of the file system, prepared before the job: every mount read-only
    but a private /tmp and /dev/shm, and a /proc that shows only the job's pid namespace.

    Directories every job needs (the bundle, the harness, the interpreter's own) are bound
    back at their paths after /tmp, and any ancestor other users cannot traverse (a 0700
    /root holding a pyenv Python), are covered by tmpfs: the job keeps what it needs and
    loses sight of the rest. A job's own directories (its work dir) are bound later, from
    the directories the covers hide, which are held open."""

    def __init__(self, keep, roots, pidns, notes):
        self.notes = notes
        paths = keep + interpreter_dirs()
        covers = {"/tmp"}
        for path in paths + [os.path.join(r, "x") for r in roots]:
            cover = hidden_ancestor(path)
            if cover:
                covers.add(cover)
        # A cover under another one is gone once that is mounted; its paths are recreated.
        covers = {c for c in covers if not any(c.startswith(o + "/") for o in covers)}
        self.under = {}  # cover -> fd of the directory it hides
        for c in covers:
            try:
                self.under[c] = os.open(c, os.O_PATH | os.O_DIRECTORY)
            except OSError:
                pass
        held = {}
        for path in paths:
            if path in held:
                continue
            try:
                held[path] = os.open(path, os.O_PATH | os.O_DIRECTORY)
            except OSError as e:
                notes.append(f"keep {path}: {e.strerror}")
        read_only(notes)
        for point, size, mode in [("/dev/shm", "64m", "1777")] + [(c, "256m" if c == "/tmp" else "1m", "1777" if c == "/tmp" else "0755") for c in sorted(covers, key=len)]:
            try:
                mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
            except OSError as e:
                notes.append(f"private {point}: {e.strerror}")
        self.bound = set()
        # Shallow paths first, so that a deeper one is bound on top.
        for path in sorted(held, key=len):
            self.bind_fd(path, held[path], False)
            os.close(held[path])
        if pidns:
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError as e:
                notes.append(f"private /proc: {e.strerror}")

    def bind(self, path, writable):
        """Binds a job's directory at its path; the ones bound for every job stay as they are."""
        if path in self.bound:
            return
        fd = None
        try:
            cover = max((c for c in self.under if path.startswith(c + "/")), key=len, default=None)
            if cover is not None:
                # Looked up below the directory the cover hides, which this fd still holds.
                fd = os.open(path[len(cover) + 1:], os.O_PATH | os.O_DIRECTORY, dir_fd=self.under[cover])
            else:
                fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
        except OSError as e:
            self.notes.append(f"keep {path}: {e.strerror}")
            return
        self.bind_fd(path, fd, writable)
        os.close(fd)

    def bind_fd(self, path, fd, writable):
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
            flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV
            if not writable:
                flags |= MS_RDONLY
            mount(None, path, None, flags)
            self.bound.add(path)
        except OSError as e:
            self.notes.append(f"bind {path}: {e.strerror}")

    def close(self):
        for fd in self.under.values():
            os.close(fd)
        self.under = {}


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
