/* pypm-sandbox: the sandbox's runner in C, executing a plan that sandbox/native.py wrote on
 * its command line. The same steps as sandbox/runner.py and sandbox/rootfs.py, in the same
 * order, with the same checks and the same error reports; see those files and
 * docs/sandbox.md for why each step is there.
 *
 * Why a compiled helper at all: `pypm run` is on the hot path, and doing these ~100 system
 * calls from Python costs ctypes (~2 ms to import), a fork of the whole interpreter (its
 * copy-on-write faults) and Python in every process of the tree: ~10 ms against ~3 ms here.
 * The policy is still decided in Python (sandbox/policy.py); this program only executes it.
 * It is compiled on first use with the host's C compiler and cached by the sha256 of this
 * source (sandbox/native.py); without a compiler, the Python runner does the same work.
 *
 * Process tree: caller (pypm, Python) -> this program (outer: waits, passes signals on)
 *   -> init (PID 1 of the new namespaces: builds the root, reaps) -> the command.
 *
 * Every failure before the command's execve is written to the status pipe as
 * "kind\x1fsyscall\x1ferrno\x1fmessage" (runner._error_from reads it) and the process exits
 * 125. Nothing is ever run when a step fails.
 *
 * Usage (only sandbox/native.py and pypm/launch.py call it):
 *   pypm-sandbox [--launch READ_FD NFALLBACK FALLBACK_ARGV...]
 *                STATUS_FD SECCOMP_FD FLAGS UID GID IN_UID IN_GID ROOT CWD HOSTNAME SIGMASK
 *                NENV [NAME=VALUE]... NMOUNTS [KIND DST SRC FLAGS MODE]... NLIMITS [LIMIT=N]...
 *                -- ARGV...
 *   NENV entries are the command's whole environment. LIMIT is a name of
 *   sandbox.policy.LIMITS (memory, cpu, processes, open-files, file-size), N its value.
 *   FLAGS: a string of letters: u m p n i t c (namespaces), P (die with parent), K (new
 *   keyring), D (disable nested user namespaces). Mount FLAGS: w (writable), o (optional),
 *   s (mirror a symlink), or "-" for none. MODE is octal. SRC is the bind source, the file's
 *   content, the symlink's target, or a tmpfs's (and dev's tmpfs') size in bytes ("" when
 *   the kind has none, or for the kernel's default size). The command's environment
 *   is the plan's NENV entries, never this program's own.
 *
 *   --launch: pypm's entry point (pypm/launch.py) exec'd us in its place, for a run whose plan
 *   it recorded earlier and found still valid. We are then the top of the tree: we read the
 *   status pipe (READ_FD) and remove the temporary root ourselves, and when any step fails
 *   we run FALLBACK_ARGV (pypm itself, told not to launch again) with our environment, which
 *   sets the sandbox up the ordinary way and reports the failure properly.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MOUNT_ATTR_NOEXEC 0x8
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define KEYCTL_JOIN_SESSION_KEYRING 1
/* NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, KEEP_CAPS off, each with its _LOCKED bit
 * (runner.SECUREBITS_LOCKDOWN): uid 0 gains nothing on execve and the command cannot undo it. */
#define SECUREBITS_LOCKDOWN 0xEF
#define EXIT_SETUP 125

static int status_fd = -1;
struct plan;
/* --launch: set once the fallback command is known; a failure in this (the top) process
 * then becomes pypm's own run instead of a report nobody reads. */
static const struct plan *launch_plan;
static pid_t outer_pid;
__attribute__((noreturn)) static void fall_back(const struct plan *p);

/* ------------------------------------------------------------------ reporting */

static void report(const char *kind, const char *syscall_name, int err, const char *message) {
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s\x1f%s\x1f%d\x1f%s", kind, syscall_name, err, message ? message : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    ssize_t w = write(status_fd, buf, (size_t)n);
    (void)w; /* nothing more can be done if the caller is gone */
}

/* A setup step failed: say which (the label is what runner.py would name), then stop. */
__attribute__((noreturn, format(printf, 3, 4)))
static void fail(int err, const char *message, const char *fmt, ...) {
    char label[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    if (launch_plan && getpid() == outer_pid)
        fall_back(launch_plan);
    report("setup", label, err, message);
    _exit(EXIT_SETUP);
}

__attribute__((noreturn))
static void internal(const char *message) {
    if (launch_plan && getpid() == outer_pid)
        fall_back(launch_plan);
    report("internal", "pypm-sandbox", 0, message);
    _exit(EXIT_SETUP);
}

/* ------------------------------------------------------------------ the plan */

struct mountop {
    const char *kind, *dst, *src;
    int writable, optional, mirror;
    mode_t mode;
};

/* sandbox.policy.LIMITS: the plan's name for each limit and the kernel's. */
static const struct {
    const char *name;
    int resource;
    const char *label;
} limit_kinds[] = {
    {"memory", RLIMIT_AS, "setrlimit(RLIMIT_AS)"},
    {"cpu", RLIMIT_CPU, "setrlimit(RLIMIT_CPU)"},
    {"processes", RLIMIT_NPROC, "setrlimit(RLIMIT_NPROC)"},
    {"open-files", RLIMIT_NOFILE, "setrlimit(RLIMIT_NOFILE)"},
    {"file-size", RLIMIT_FSIZE, "setrlimit(RLIMIT_FSIZE)"},
};
#define NLIMIT_KINDS (sizeof limit_kinds / sizeof limit_kinds[0])

struct limit {
    int kind; /* index into limit_kinds */
    rlim_t value;
};

struct plan {
    int ns_flags, die_with_parent, new_keyring, disable_userns, has_uts, has_net;
    uid_t uid, in_uid;
    gid_t gid, in_gid;
    const char *root, *cwd, *hostname;
    sigset_t old_mask;
    int nenv;
    char **env;
    int nmounts;
    struct mountop *mounts;
    char **argv;
    int nlimits;
    struct limit limits[NLIMIT_KINDS];
    int seccomp_fd;
    /* --launch */
    int launch, read_fd;
    char **fallback;
};

static long parse_long(const char *s, int base) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, base);
    if (errno || *s == '\0' || *end != '\0')
        internal("malformed number in the plan");
    return v;
}

static void parse(int argc, char **argv, struct plan *p) {
    int i = 1;
    if (argc > 3 && strcmp(argv[1], "--launch") == 0) {
        p->launch = 1;
        p->read_fd = (int)parse_long(argv[2], 10);
        long n = parse_long(argv[3], 10);
        if (n < 1 || n > argc - 4)
            internal("the fallback command is malformed");
        /* NULL-terminated in place: the plan's first field overwrites nothing we need, it is
         * copied to its own argv below. */
        p->fallback = calloc((size_t)n + 1, sizeof *p->fallback);
        if (!p->fallback)
            internal("out of memory");
        for (long k = 0; k < n; k++)
            p->fallback[k] = argv[4 + k];
        i = 4 + (int)n;
        outer_pid = getpid();
        launch_plan = p;
    }
    if (argc - i < 13)
        internal("the plan is incomplete");
    status_fd = (int)parse_long(argv[i++], 10);
    p->seccomp_fd = (int)parse_long(argv[i++], 10);
    const char *flags = argv[i++];
    p->ns_flags = 0;
    for (const char *f = flags; *f; f++) {
        switch (*f) {
        case 'u': p->ns_flags |= CLONE_NEWUSER; break;
        case 'm': p->ns_flags |= CLONE_NEWNS; break;
        case 'p': p->ns_flags |= CLONE_NEWPID; break;
        case 'n': p->ns_flags |= CLONE_NEWNET; p->has_net = 1; break;
        case 'i': p->ns_flags |= CLONE_NEWIPC; break;
        case 't': p->ns_flags |= CLONE_NEWUTS; p->has_uts = 1; break;
        case 'c': p->ns_flags |= CLONE_NEWCGROUP; break;
        case 'P': p->die_with_parent = 1; break;
        case 'K': p->new_keyring = 1; break;
        case 'D': p->disable_userns = 1; break;
        default: internal("unknown flag in the plan");
        }
    }
    /* The same minimum sandbox.policy.Policy insists on. */
    if (!(p->ns_flags & CLONE_NEWUSER) || !(p->ns_flags & CLONE_NEWNS) || !(p->ns_flags & CLONE_NEWPID))
        internal("a plan must unshare at least the user, mount and PID namespaces");
    p->uid = (uid_t)parse_long(argv[i++], 10);
    p->gid = (gid_t)parse_long(argv[i++], 10);
    p->in_uid = (uid_t)parse_long(argv[i++], 10);
    p->in_gid = (gid_t)parse_long(argv[i++], 10);
    p->root = argv[i++];
    p->cwd = argv[i++];
    p->hostname = argv[i++];
    unsigned long long mask = strtoull(argv[i++], NULL, 16);
    sigemptyset(&p->old_mask);
    for (int s = 1; s < 64; s++)
        if (mask & (1ULL << (s - 1)))
            sigaddset(&p->old_mask, s);
    p->nenv = (int)parse_long(argv[i++], 10);
    if (p->nenv < 0 || p->nenv > 100000 || i + p->nenv >= argc)
        internal("the plan's environment is malformed");
    p->env = calloc((size_t)p->nenv + 1, sizeof *p->env);
    if (!p->env)
        internal("out of memory");
    for (int k = 0; k < p->nenv; k++) {
        if (!strchr(argv[i], '='))
            internal("the plan's environment is malformed");
        p->env[k] = argv[i++];
    }
    p->nmounts = (int)parse_long(argv[i++], 10);
    if (p->nmounts < 0 || p->nmounts > 100000 || i + 5 * p->nmounts >= argc)
        internal("the plan's mount list is malformed");
    p->mounts = calloc((size_t)p->nmounts + 1, sizeof *p->mounts);
    if (!p->mounts)
        internal("out of memory");
    for (int m = 0; m < p->nmounts; m++) {
        struct mountop *op = &p->mounts[m];
        op->kind = argv[i++];
        op->dst = argv[i++];
        op->src = argv[i++];
        for (const char *f = argv[i++]; *f; f++) {
            if (*f == 'w') op->writable = 1;
            else if (*f == 'o') op->optional = 1;
            else if (*f == 's') op->mirror = 1;
            else if (*f != '-') internal("unknown mount flag in the plan");
        }
        op->mode = (mode_t)parse_long(argv[i++], 8);
        if (op->dst[0] != '/')
            internal("a mount destination is not absolute");
    }
    if (i >= argc)
        internal("the plan's limits are missing");
    long nlimits = parse_long(argv[i++], 10);
    if (nlimits < 0 || nlimits > (long)NLIMIT_KINDS || i + nlimits > argc)
        internal("the plan's limits are malformed");
    p->nlimits = (int)nlimits;
    for (int k = 0; k < p->nlimits; k++) {
        const char *item = argv[i++], *eq = strchr(item, '=');
        if (!eq)
            internal("the plan's limits are malformed");
        int kind = -1;
        for (size_t n = 0; n < NLIMIT_KINDS; n++)
            if (strlen(limit_kinds[n].name) == (size_t)(eq - item) && strncmp(item, limit_kinds[n].name, (size_t)(eq - item)) == 0)
                kind = (int)n;
        for (int prev = 0; prev < k; prev++)
            if (p->limits[prev].kind == kind)
                kind = -1; /* each limit once */
        if (kind < 0)
            internal("unknown or repeated limit in the plan");
        char *end;
        errno = 0;
        unsigned long long v = strtoull(eq + 1, &end, 10);
        if (errno || eq[1] < '0' || eq[1] > '9' || *end != '\0' || v >= (unsigned long long)RLIM_INFINITY)
            internal("malformed limit value in the plan");
        p->limits[k].kind = kind;
        p->limits[k].value = (rlim_t)v;
    }
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc)
        internal("the plan has no command");
    p->argv = &argv[i + 1];
}

/* ------------------------------------------------------------------ small checked steps */

static void write_file(const char *path, const char *data) {
    char msg[128]; /* "writing 'DATA'", DATA without its newline, as rootfs.write_file says it */
    size_t len = strlen(data), shown = len;
    while (shown && (data[shown - 1] == '\n' || data[shown - 1] == ' '))
        shown--;
    snprintf(msg, sizeof msg, "writing '%.*s'", (int)shown, data);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        fail(errno, msg, "write(%s)", path);
    ssize_t n = write(fd, data, len);
    int err = errno;
    close(fd);
    if (n != (ssize_t)len)
        fail(n < 0 ? err : EIO, msg, "write(%s)", path);
}

static void do_mount(const char *src, const char *target, const char *fstype, unsigned long flags,
                     const char *data) {
    if (mount(src, target, fstype, flags, data) == 0)
        return;
    int err = errno;
    if (flags & MS_REMOUNT)
        fail(err, "", "mount(remount, %s)", target);
    if (flags & MS_BIND)
        fail(err, "", "mount(bind %s, %s)", src ? src : "", target);
    if (flags & (MS_PRIVATE | MS_SLAVE))
        fail(err, "", "mount(%s, %s)", (flags & MS_PRIVATE) ? "make-private" : "make-slave", target);
    fail(err, "", "mount(%s, %s)", fstype ? fstype : "?", target);
}

/* Places in the new root that may hold symlinks (rootfs._LINKS): binds and symlinks we made. */
static char **links;
static size_t nlinks, caplinks;

static void add_link(const char *full) {
    if (nlinks == caplinks) {
        caplinks = caplinks ? 2 * caplinks : 64;
        links = realloc(links, caplinks * sizeof *links);
        if (!links)
            internal("out of memory");
    }
    links[nlinks] = strdup(full);
    if (!links[nlinks])
        internal("out of memory");
    nlinks++;
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > PATH_MAX)
        internal("a path in the plan is too long");
    char *s = malloc(la + lb + 1);
    if (!s)
        internal("out of memory");
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static int under(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* root + path, refusing a path whose existing part resolves outside the new root: an
 * absolute symlink inside a bind would otherwise send a mkdir or mount to the host. */
static char *inside(const char *root, const char *path) {
    char *full = join(root, path);
    int risky = 0;
    for (size_t k = 0; k < nlinks && !risky; k++)
        risky = under(full, links[k]);
    if (!risky)
        return full; /* nothing on the way can be a symlink: the rest is our own tmpfs */
    char head[PATH_MAX];
    struct stat st;
    snprintf(head, sizeof head, "%s", full);
    while (lstat(head, &st) != 0) {
        char *slash = strrchr(head, '/');
        if (!slash || slash == head)
            break;
        *slash = '\0';
    }
    char real[PATH_MAX], msg[PATH_MAX + 64];
    snprintf(msg, sizeof msg, "%s resolves outside the sandbox root", path);
    if (!realpath(head, real))
        fail(errno, msg, "mkdir(%s)", path);
    if (!under(real, root))
        fail(EXDEV, msg, "mkdir(%s)", path);
    return full;
}

/* mkdir -p, each missing component with `mode` (os.makedirs(exist_ok=True)). */
static char *mkdirs(const char *root, const char *path, mode_t mode) {
    char *full = inside(root, path);
    char buf[PATH_MAX], msg[PATH_MAX + 32];
    snprintf(buf, sizeof buf, "%s", full);
    snprintf(msg, sizeof msg, "creating the mount point %s", path);
    size_t rootlen = strlen(root);
    for (char *p = buf + rootlen + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST)
                fail(errno, msg, "mkdir(%s)", path);
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(full, &st) != 0 || !S_ISDIR(st.st_mode))
        fail(EEXIST, msg, "mkdir(%s)", path);
    return full;
}

static char *parent_of(const char *path) {
    char *d = strdup(path);
    if (!d)
        internal("out of memory");
    char *slash = strrchr(d, '/');
    if (slash == d)
        d[1] = '\0';
    else if (slash)
        *slash = '\0';
    return d;
}

static char *touch(const char *root, const char *path) {
    char *dir = parent_of(path);
    if (strcmp(dir, "/") != 0)
        free(mkdirs(root, dir, 0755));
    free(dir);
    char *full = inside(root, path);
    int fd = open(full, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        char msg[PATH_MAX + 32];
        snprintf(msg, sizeof msg, "creating the mount point %s", path);
        fail(errno, msg, "open(%s)", path);
    }
    close(fd);
    return full;
}

static void make_symlink(const char *root, const char *target, const char *path) {
    char *dir = parent_of(path);
    if (strcmp(dir, "/") != 0)
        free(mkdirs(root, dir, 0755));
    free(dir);
    char *full = inside(root, path);
    if (symlink(target, full) != 0)
        fail(errno, "creating a symlink", "symlink(%s)", path);
    add_link(full);
    free(full);
}

/* Set read-only/nosuid/nodev/noexec on a mount and every mount below it, then check they
 * stuck. mount_setattr(AT_RECURSIVE) never clears a flag the host locked. Kernels before
 * 5.12 lack it: reported as ENOSYS, and the caller falls back to the Python runner, which
 * remounts each mount of the subtree. */
static void lock_flags(const char *path, uint64_t attrs, const char *label) {
    struct mount_attr attr = {.attr_set = attrs};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) != 0)
        fail(errno, "", "mount_setattr(%s)", label);
    struct statvfs sv;
    if (statvfs(path, &sv) != 0)
        fail(errno, "checking the mount's flags", "statvfs(%s)", label);
    static const struct { uint64_t attr; unsigned long st; } map[] = {
        {MOUNT_ATTR_RDONLY, ST_RDONLY}, {MOUNT_ATTR_NOSUID, ST_NOSUID},
        {MOUNT_ATTR_NODEV, ST_NODEV}, {MOUNT_ATTR_NOEXEC, ST_NOEXEC}};
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if ((attrs & map[k].attr) && !(sv.f_flag & map[k].st)) {
            char msg[256];
            snprintf(msg, sizeof msg, "the flag %#llx did not stick on %s", (unsigned long long)map[k].attr, label);
            fail(EPERM, msg, "mount_setattr(%s)", label);
        }
}

#define RO (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
#define RW (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)

/* ------------------------------------------------------------------ the root (rootfs.py) */

static void bind_op(const char *root, const struct mountop *m) {
    const char *src = m->src;
    char src_msg[PATH_MAX + 16];
    snprintf(src_msg, sizeof src_msg, "bind source %s", src);
    struct stat st;
    if (lstat(src, &st) != 0) {
        if (m->optional && (errno == ENOENT || errno == ENOTDIR))
            return;
        fail(errno, src_msg, "mount(bind %s)", src);
    }
    if (m->mirror && S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof target - 1);
        if (n < 0)
            fail(errno, src_msg, "readlink(%s)", src);
        target[n] = '\0';
        make_symlink(root, target, m->dst);
        return;
    }
    if (stat(src, &st) != 0) {
        if (m->optional && (errno == ENOENT || errno == ENOTDIR))
            return; /* a dangling symlink on the host */
        fail(errno, src_msg, "mount(bind %s)", src);
    }
    char *full = S_ISDIR(st.st_mode) ? mkdirs(root, m->dst, 0755) : touch(root, m->dst);
    do_mount(src, full, NULL, MS_BIND | MS_REC, NULL);
    lock_flags(full, m->writable ? RW : RO, m->dst);
    add_link(full);
    free(full);
}

/* A tmpfs's options: its mode, and its size when the plan gives one (the SRC of a tmpfs or dev
 * mount: a number of bytes, sandbox.policy's tmp-size). */
static void tmpfs_options(char *data, size_t n, unsigned mode, const char *size) {
    if (size[0] == '\0') {
        snprintf(data, n, "mode=%o", mode);
        return;
    }
    for (const char *c = size; *c; c++)
        if (*c < '0' || *c > '9')
            internal("malformed tmpfs size in the plan");
    if (strlen(size) > 19)
        internal("malformed tmpfs size in the plan");
    snprintf(data, n, "mode=%o,size=%s", mode, size);
}

static const char *const DEVICES[] = {"null", "zero", "full", "random", "urandom", "tty"};

/* A minimal /dev: harmless character devices bound from the host, a private devpts (its
 * own ptmx, none of the host's terminals) and a tmpfs /dev/shm. */
static void dev(const char *root, const struct mountop *m) {
    char *full = mkdirs(root, m->dst, 0755);
    char path[PATH_MAX];
    char data[64];
    tmpfs_options(data, sizeof data, 0755, m->src);
    do_mount("tmpfs", full, "tmpfs", MS_NOSUID | MS_NOEXEC, data);
    for (size_t k = 0; k < sizeof DEVICES / sizeof DEVICES[0]; k++) {
        char host[64];
        snprintf(path, sizeof path, "%s/%s", m->dst, DEVICES[k]);
        snprintf(host, sizeof host, "/dev/%s", DEVICES[k]);
        char *node = touch(root, path);
        do_mount(host, node, NULL, MS_BIND, NULL);
        /* Device binds keep "dev" (nodev would make them unusable); nosuid, noexec. */
        lock_flags(node, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, path);
        free(node);
    }
    snprintf(path, sizeof path, "%s/pts", m->dst);
    char *pts = mkdirs(root, path, 0755);
    do_mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620");
    free(pts);
    snprintf(path, sizeof path, "%s/ptmx", full);
    if (symlink("pts/ptmx", path) != 0)
        fail(errno, "", "symlink(%s/ptmx)", m->dst);
    snprintf(path, sizeof path, "%s/shm", m->dst);
    char *shm = mkdirs(root, path, 0755);
    tmpfs_options(data, sizeof data, 01777, m->src);
    do_mount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, data);
    free(shm);
    static const char *const fdlinks[][2] = {
        {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"}};
    for (size_t k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/%s", full, fdlinks[k][0]);
        if (symlink(fdlinks[k][1], path) != 0)
            fail(errno, "", "symlink(%s/%s)", m->dst, fdlinks[k][0]);
    }
    free(full);
}

/* Parts of a fresh /proc that would let uid 0 (real root mapped to itself) change the host
 * kernel: sysctls, the SysRq trigger, IRQ affinity, bus settings. Read-only binds over
 * themselves, as bubblewrap does. */
static const char *const PROC_RO[] = {"sys", "sysrq-trigger", "irq", "bus"};

static void proc(const char *root, const struct mountop *m, int disable_userns) {
    char *full = mkdirs(root, m->dst, 0755);
    char path[PATH_MAX], label[PATH_MAX];
    do_mount("proc", full, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (disable_userns) {
        /* No nested user namespaces, enforced by the kernel beside seccomp: the limit is per
         * user namespace and this one is ours; once /proc/sys is read-only and every
         * capability is gone, nothing inside can raise it again. */
        snprintf(path, sizeof path, "%s/sys/user/max_user_namespaces", full);
        write_file(path, "0");
    }
    for (size_t k = 0; k < sizeof PROC_RO / sizeof PROC_RO[0]; k++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", full, PROC_RO[k]);
        if (lstat(path, &st) != 0)
            continue;
        snprintf(label, sizeof label, "%s/%s", m->dst, PROC_RO[k]);
        do_mount(path, path, NULL, MS_BIND | MS_REC, NULL);
        lock_flags(path, RO, label);
    }
    free(full);
}

static void build_root(const struct plan *p) {
    const char *root = p->root;
    /* Nothing we mount may propagate back to the host (and pivot_root refuses a shared parent). */
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    do_mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    for (int k = 0; k < p->nmounts; k++) {
        const struct mountop *m = &p->mounts[k];
        if (strcmp(m->kind, "bind") == 0) {
            bind_op(root, m);
        } else if (strcmp(m->kind, "tmpfs") == 0) {
            char data[64];
            tmpfs_options(data, sizeof data, (unsigned)m->mode, m->src);
            char *full = mkdirs(root, m->dst, 0755);
            do_mount("tmpfs", full, "tmpfs", MS_NOSUID | MS_NODEV, data);
            free(full);
        } else if (strcmp(m->kind, "proc") == 0) {
            proc(root, m, p->disable_userns);
        } else if (strcmp(m->kind, "dev") == 0) {
            dev(root, m);
        } else if (strcmp(m->kind, "devpts") == 0) {
            char *full = mkdirs(root, m->dst, 0755);
            do_mount("devpts", full, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620");
            free(full);
        } else if (strcmp(m->kind, "file") == 0) {
            char *dir = parent_of(m->dst);
            if (strcmp(dir, "/") != 0)
                free(mkdirs(root, dir, 0755));
            free(dir);
            char *full = inside(root, m->dst);
            int fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, m->mode);
            if (fd < 0)
                fail(errno, "writing a file of the new root", "open(%s)", m->dst);
            size_t len = strlen(m->src);
            if (write(fd, m->src, len) != (ssize_t)len || fchmod(fd, m->mode) != 0)
                fail(errno, "writing a file of the new root", "write(%s)", m->dst);
            close(fd);
            free(full);
        } else if (strcmp(m->kind, "symlink") == 0) {
            make_symlink(root, m->src, m->dst);
        } else if (strcmp(m->kind, "dir") == 0) {
            free(mkdirs(root, m->dst, m->mode));
        } else {
            internal("unknown mount kind in the plan");
        }
    }
}

/* pivot_root(".", "."): the old root ends up stacked under the new one at "/", and
 * detaching "." removes it; no directory for the old root is needed (pivot_root(2)). */
static void pivot(const char *root) {
    if (chdir(root) != 0)
        fail(errno, "", "chdir(%s)", root);
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        fail(errno, "", "pivot_root");
    if (umount2(".", MNT_DETACH) != 0)
        fail(errno, "", "umount2(.)");
    if (chdir("/") != 0)
        fail(errno, "", "chdir(/)");
    /* The root itself (mount points, /etc/passwd, ...) becomes read-only. */
    do_mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
    struct statvfs sv;
    if (statvfs("/", &sv) != 0 || !(sv.f_flag & ST_RDONLY))
        fail(EPERM, "the new root did not become read-only", "mount(remount /, ro)");
}

/* Bring lo up with one ioctl: the kernel gives it 127.0.0.1/8 and ::1 when it goes up. */
static void loopback_up(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(errno, "", "socket(AF_INET)");
    struct ifreq req;
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &req) != 0)
        fail(errno, "", "ioctl(lo, SIOCGIFFLAGS)");
    req.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &req) != 0)
        fail(errno, "", "ioctl(lo, SIOCSIFFLAGS)");
    if (ioctl(fd, SIOCGIFFLAGS, &req) != 0)
        fail(errno, "", "ioctl(lo, SIOCGIFFLAGS)");
    if (!(req.ifr_flags & IFF_UP))
        fail(EIO, "", "ioctl(lo, SIOCSIFFLAGS): lo is still down");
    close(fd);
}

/* ------------------------------------------------------------------ privileges */

static int prctl_checked(int option, unsigned long a2, unsigned long a3, const char *what) {
    int r = prctl(option, a2, a3, 0, 0);
    if (r == -1)
        fail(errno, "", "%s", what);
    return r;
}

/* No capability survives and none can come back (runner._drop_privileges): securebits
 * first (lockdown, for the command), then the bounding set, the ambient set, and
 * effective/permitted/inheritable via capset; each checked afterwards. */
static void drop_privileges(int lockdown) {
    if (lockdown)
        prctl_checked(PR_SET_SECUREBITS, SECUREBITS_LOCKDOWN, 0, "prctl(PR_SET_SECUREBITS)");
    int cap;
    for (cap = 0;; cap++) {
        int r = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0);
        if (r == -1) {
            if (errno == EINVAL)
                break; /* past the kernel's last capability */
            fail(errno, "", "prctl(PR_CAPBSET_READ)");
        }
        if (r && prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) != 0)
            fail(errno, "", "prctl(PR_CAPBSET_DROP, %d)", cap);
    }
    prctl_checked(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) != 0)
        fail(errno, "", "capset");
    memset(data, 0xff, sizeof data);
    if (syscall(SYS_capget, &hdr, data) != 0)
        fail(errno, "", "capget");
    for (int k = 0; k < 2; k++)
        if (data[k].effective || data[k].permitted || data[k].inheritable)
            fail(EPERM, "capabilities survived capset", "capset");
    for (int c = 0; c < cap; c++)
        if (prctl_checked(PR_CAPBSET_READ, (unsigned long)c, 0, "prctl(PR_CAPBSET_READ)")) {
            char msg[64];
            snprintf(msg, sizeof msg, "capability %d is still in the bounding set", c);
            fail(EPERM, msg, "prctl(PR_CAPBSET_DROP)");
        }
    prctl_checked(PR_SET_NO_NEW_PRIVS, 1, 0, "prctl(PR_SET_NO_NEW_PRIVS)");
    if (prctl_checked(PR_GET_NO_NEW_PRIVS, 0, 0, "prctl(PR_GET_NO_NEW_PRIVS)") != 1)
        fail(EPERM, "no_new_privs did not stick", "prctl(PR_SET_NO_NEW_PRIVS)");
}

/* SIGKILL us when our parent dies: kill -9 of pypm takes the whole tree down (init dies,
 * so the kernel kills every process of the PID namespace). */
static void die_with_parent(void) {
    prctl_checked(PR_SET_PDEATHSIG, SIGKILL, 0, "prctl(PR_SET_PDEATHSIG)");
}

/* Whether the caller still holds the status pipe's read end: closes the window between our
 * birth and PR_SET_PDEATHSIG, where its death would go unseen. */
static int caller_alive(void) {
    struct pollfd pfd = {.fd = status_fd, .events = POLLOUT};
    if (poll(&pfd, 1, 0) < 0)
        return 0;
    return !(pfd.revents & (POLLERR | POLLNVAL));
}

/* The lifeline: a pipe whose write end only the outer process holds (init closes its copy
 * first thing). Init's parent is the outer one; when the outer dies before init has set
 * PR_SET_PDEATHSIG, the signal never comes and caller_alive() cannot tell (launched, init
 * holds the status pipe's read end itself; otherwise the caller above may still be alive):
 * a hang-up on the lifeline can. */
static int lifeline[2] = {-1, -1};

static int outer_alive(void) {
    struct pollfd pfd = {.fd = lifeline[0], .events = POLLIN};
    if (poll(&pfd, 1, 0) < 0)
        return 0;
    return !(pfd.revents & (POLLHUP | POLLERR | POLLNVAL));
}

/* ------------------------------------------------------------------ waiting */

static int exit_code(int status) {
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

/* Wait for `pid`, passing down signals that a process sent us (kill: si_code <= 0); one the
 * terminal generated (Ctrl-C) already reached the command, in the same process group.
 * As init (PID 1 of the namespace), also reap every orphan. */
static int supervise(pid_t pid, int init) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGCHLD);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        if (sig < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (sig == SIGCHLD) {
            for (;;) {
                int status;
                pid_t got = waitpid(init ? -1 : pid, &status, WNOHANG);
                if (got < 0) {
                    if (errno == EINTR)
                        continue;
                    return 1; /* someone else reaped it */
                }
                if (got == pid)
                    return exit_code(status);
                if (got == 0 || !init)
                    break;
            }
        } else if (info.si_code <= 0) { /* SI_USER, SI_QUEUE, SI_TKILL: sent by a process */
            kill(pid, sig);
        }
    }
}

/* ------------------------------------------------------------------ the command */

/* The policy's resource limits, soft = hard (runner._set_limits): raising a hard limit needs
 * CAP_SYS_RESOURCE in the initial user namespace, which nothing in the sandbox has, so the
 * command can lower them but never raise them. Read back: a limit that did not stick is fatal. */
static void set_limits(const struct plan *p) {
    for (int k = 0; k < p->nlimits; k++) {
        const struct limit *l = &p->limits[k];
        struct rlimit want = {.rlim_cur = l->value, .rlim_max = l->value}, got;
        if (setrlimit(limit_kinds[l->kind].resource, &want) != 0)
            fail(errno, "setting a sandbox limit", "%s", limit_kinds[l->kind].label);
        if (getrlimit(limit_kinds[l->kind].resource, &got) != 0)
            fail(errno, "reading a sandbox limit back", "%s", limit_kinds[l->kind].label);
        if (got.rlim_cur != l->value || got.rlim_max != l->value)
            fail(EPERM, "the sandbox limit did not stick", "%s", limit_kinds[l->kind].label);
    }
}

static void load_seccomp(int fd) {
    /* The programs the caller compiled (sandbox.seccomp), each "u32 length, bytes". */
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) != 0)
        fail(errno, "", "fstat(seccomp programs)");
    size_t size = (size_t)st.st_size;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf)
        internal("out of memory");
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
        if (n <= 0)
            fail(n < 0 ? errno : EIO, "", "read(seccomp programs)");
        got += (size_t)n;
    }
    close(fd);
    int loaded = 0;
    for (size_t off = 0; off < size;) {
        if (size - off < 4)
            fail(EINVAL, "the cached BPF program is malformed", "prctl(PR_SET_SECCOMP)");
        uint32_t len;
        memcpy(&len, buf + off, 4);
        off += 4;
        if (len == 0 || len % 8 || len > size - off || len / 8 > 0xffff)
            fail(EINVAL, "the cached BPF program is malformed", "prctl(PR_SET_SECCOMP)");
        struct sock_fprog prog = {.len = (unsigned short)(len / 8), .filter = (struct sock_filter *)(buf + off)};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
            fail(errno, "", "prctl(PR_SET_SECCOMP)");
        off += len;
        loaded++;
    }
    if (loaded && prctl_checked(PR_GET_SECCOMP, 0, 0, "prctl(PR_GET_SECCOMP)") != SECCOMP_MODE_FILTER)
        fail(EPERM, "the seccomp filter is not active", "prctl(PR_SET_SECCOMP)");
}

/* execvpe without glibc's fallback to /bin/sh on ENOEXEC (runner._execvpe): the PATH is the
 * command's own, inside the sandbox; the error kept is the first that is not "no such file". */
static int exec_command(char **argv, char **env) {
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execve(file, argv, env);
        return errno;
    }
    const char *path = NULL;
    for (char **e = env; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    if (!path)
        path = "/bin:/usr/bin"; /* os.defpath */
    int saved = 0, last = ENOENT;
    char buf[PATH_MAX];
    for (const char *p = path;; ) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int len = n == 0 ? snprintf(buf, sizeof buf, "%s", file)
                         : snprintf(buf, sizeof buf, "%.*s/%s", (int)n, p, file);
        /* Too long: never execve a truncated name (another file); the kernel's own answer. */
        if (len < 0 || (size_t)len >= sizeof buf)
            errno = ENAMETOOLONG;
        else
            execve(buf, argv, env);
        last = errno;
        if (last != ENOENT && last != ENOTDIR && !saved)
            saved = last;
        if (!end)
            break;
        p = end + 1;
    }
    return saved ? saved : last;
}

__attribute__((noreturn))
static void command(const struct plan *p) {
    if (p->die_with_parent)
        die_with_parent();
    if (p->new_keyring && syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0)
        /* A new anonymous session keyring: the caller's keys stay out. */
        fail(errno, "", "keyctl");
    /* No fd but 0-2 reaches the command; close-on-exec rather than close, so that the
     * status pipe can still carry an execve failure. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        fail(errno, "", "close_range");
    /* Our own pipe ends may sit at 0-2 (the caller was started with them closed, and a pipe
     * takes the lowest free fds): they must not become the command's stdio. Without this,
     * the command's stdout was the status pipe, and its output was taken for a setup
     * failure after it ran (launched: it was run a second time). Closed stays closed. */
    if (fcntl(status_fd, F_SETFD, FD_CLOEXEC) != 0)
        fail(errno, "", "fcntl(status pipe, FD_CLOEXEC)");
    if (p->launch && p->read_fd >= 0 && fcntl(p->read_fd, F_SETFD, FD_CLOEXEC) != 0)
        fail(errno, "", "fcntl(status pipe, FD_CLOEXEC)");
    drop_privileges(1);
    set_limits(p);
    /* Dispositions: Python (pypm) ignores SIGPIPE and SIGXFSZ, and an ignored signal survives
     * execve: the command gets them back at default. SIGCHLD too (an inherited "ignore" makes
     * the command's children vanish unwaitable). Every other one stays as pypm was started
     * with it: `nohup pypm run ...` (SIGHUP ignored) and a shell's background job (SIGINT and
     * SIGQUIT ignored) must protect the command as they would protect any other program. We
     * install no handler, and the supervised signals are only blocked (the mask is restored
     * below). */
    static const int defaults[] = {SIGCHLD, SIGPIPE, SIGXFSZ};
    for (size_t k = 0; k < sizeof defaults / sizeof defaults[0]; k++)
        signal(defaults[k], SIG_DFL);
    load_seccomp(p->seccomp_fd);
    sigprocmask(SIG_SETMASK, &p->old_mask, NULL);
    int err = exec_command(p->argv, p->env);
    report("exec", "execve", err, p->argv[0]);
    _exit(err == ENOENT ? 127 : 126);
}

/* ------------------------------------------------------------------ init and outer */

__attribute__((noreturn))
static void init(const struct plan *p) {
    close(lifeline[1]);
    if (p->die_with_parent) {
        die_with_parent();
        if (!outer_alive() || !caller_alive())
            _exit(EXIT_SETUP);
    }
    close(lifeline[0]);
    /* Map the caller's ids (to themselves, or to 0 with --root) and nothing else. setgroups
     * is denied first: needed before an unprivileged gid_map, and it stops the command from
     * dropping a supplementary group to get past a deny ACL. */
    char map[64];
    write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)p->in_uid, (unsigned)p->uid);
    write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)p->in_gid, (unsigned)p->gid);
    write_file("/proc/self/gid_map", map);
    build_root(p);
    if (p->has_uts && sethostname(p->hostname, strlen(p->hostname)) != 0)
        fail(errno, "", "sethostname");
    if (p->has_net)
        loopback_up();
    pivot(p->root);
    if (chdir(p->cwd) != 0)
        fail(errno, "entering the working directory", "chdir(%s)", p->cwd);
    pid_t pid = fork();
    if (pid < 0)
        fail(errno, "", "fork");
    if (pid == 0)
        command(p);
    close(status_fd);
    /* init keeps no fd it does not need: the programs (the command has its own copy) and,
     * launched, the status pipe's read end (the outer one reads it). */
    if (p->seccomp_fd >= 0)
        close(p->seccomp_fd);
    if (p->launch && p->read_fd >= 0)
        close(p->read_fd);
    /* PID 1 never runs foreign code, but the command must not be able to reach it either:
     * not dumpable (no ptrace, no /proc/1/mem) and as unprivileged as the command. */
    prctl_checked(PR_SET_DUMPABLE, 0, 0, "prctl(PR_SET_DUMPABLE)");
    drop_privileges(0);
    _exit(supervise(pid, 1));
}

/* --launch: a step failed before the command ran (or could not start at all). Remove the
 * temporary root and become pypm, which is told not to launch (PYPM_NO_LAUNCHER=1): it
 * builds the sandbox itself and reports whatever fails in its own words. */
static void fall_back(const struct plan *p) {
    launch_plan = NULL;
    if (p->read_fd >= 0)
        close(p->read_fd);
    if (p->root)
        rmdir(p->root);
    /* pypm's own signal mask (the plan's SIGMASK once parsed; pypm runs with none blocked) */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, p->root ? &p->old_mask : &none, NULL);
    if (setenv("PYPM_NO_LAUNCHER", "1", 1) == 0)
        execv(p->fallback[0], p->fallback);
    fprintf(stderr, "pypm: error: cannot run %s: %s\n", p->fallback[0], strerror(errno));
    _exit(EXIT_SETUP);
}

/* --launch, once the command runs: remove the empty temporary roots that runs killed during
 * their setup left beside ours (owned by us, named after a process that is gone), as
 * sandbox.caller._sweep does for the ordinary path. rmdir never removes content. */
static void sweep_roots(const char *root) {
    char base[PATH_MAX];
    snprintf(base, sizeof base, "%s", root);
    char *slash = strrchr(base, '/');
    if (!slash)
        return;
    *slash = '\0';
    DIR *d = opendir(slash == base ? "/" : base);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        static const char prefix[] = "pypm-sandbox.";
        if (strncmp(e->d_name, prefix, sizeof prefix - 1) != 0)
            continue;
        char *end;
        long pid = strtol(e->d_name + sizeof prefix - 1, &end, 10);
        struct stat st;
        if (pid <= 0 || *end != '.' || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode) || st.st_uid != getuid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
    }
    closedir(d);
}

int main(int argc, char **argv) {
    struct plan p;
    memset(&p, 0, sizeof p);
    /* Until the status fd is known, a malformed plan can only be an exit status. */
    if (argc < 2)
        return EXIT_SETUP;
    parse(argc, argv, &p);
    /* The caller blocked INT/TERM/HUP/QUIT/CHLD before starting us (we inherit the mask), so
     * no signal is lost before sigwaitinfo; block them again in case a caller did not:
     * sigwaitinfo only sees blocked signals (an unblocked SIGCHLD would be discarded). The
     * command gets the caller's own mask back (the plan's SIGMASK) just before its execve. */
    /* Launched in pypm's place, the mask we inherited is pypm's own, which the ordinary path
     * gives the command (the plan's SIGMASK was recorded by another process): keep it. */
    if (p.launch)
        sigprocmask(SIG_SETMASK, NULL, &p.old_mask);
    sigset_t supervised;
    sigemptyset(&supervised);
    sigaddset(&supervised, SIGINT);
    sigaddset(&supervised, SIGTERM);
    sigaddset(&supervised, SIGHUP);
    sigaddset(&supervised, SIGQUIT);
    sigaddset(&supervised, SIGCHLD);
    sigprocmask(SIG_BLOCK, &supervised, NULL);
    if (p.die_with_parent && !p.launch) {
        /* Started by the Python caller, which waits for us: die with it. (Launched in pypm's
         * place we are the top process, like pypm itself.) */
        die_with_parent();
        if (!caller_alive())
            return EXIT_SETUP;
    }
    if (pipe2(lifeline, O_CLOEXEC) != 0) {
        if (p.launch)
            fall_back(&p);
        report("setup", "pipe2(lifeline)", errno, "");
        return EXIT_SETUP;
    }
    /* clone(2) straight into the new namespaces, with fork semantics (NULL stack): this
     * program is single-threaded, so nothing can be held locked in the child. */
    long pid = syscall(SYS_clone, (unsigned long)(p.ns_flags | SIGCHLD), NULL, NULL, NULL, 0UL);
    if (pid < 0) {
        char label[256] = "clone(";
        static const struct { int flag; const char *name; } names[] = {
            {CLONE_NEWUSER, "CLONE_NEWUSER"}, {CLONE_NEWNS, "CLONE_NEWNS"}, {CLONE_NEWPID, "CLONE_NEWPID"},
            {CLONE_NEWNET, "CLONE_NEWNET"}, {CLONE_NEWIPC, "CLONE_NEWIPC"}, {CLONE_NEWUTS, "CLONE_NEWUTS"},
            {CLONE_NEWCGROUP, "CLONE_NEWCGROUP"}};
        int first = 1;
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            if (p.ns_flags & names[k].flag) {
                if (!first)
                    strcat(label, "|");
                strcat(label, names[k].name);
                first = 0;
            }
        strcat(label, ")");
        if (p.launch)
            fall_back(&p);
        report("setup", label, errno, "");
        return EXIT_SETUP;
    }
    if (pid == 0)
        init(&p);
    close(lifeline[0]); /* the write end stays open until we exit: init's sign that we live */
    close(status_fd);
    if (p.seccomp_fd >= 0)
        close(p.seccomp_fd);
    if (p.launch) {
        /* What sandbox.caller does for the Python caller: wait until the command has been
         * exec'd (EOF) or a step failed (a report), then remove the temporary root. */
        char buf[512];
        size_t got = 0;
        for (;;) {
            ssize_t n = read(p.read_fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        close(p.read_fd);
        p.read_fd = -1;
        if (got) { /* nothing ran: let pypm set the sandbox up itself, and report */
            int status;
            while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR)
                ;
            fall_back(&p);
        }
        rmdir(p.root);
        sweep_roots(p.root);
    }
    return supervise((pid_t)pid, 0);
}
