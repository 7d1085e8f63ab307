/*
 * proxycore fork server, compiled: the same helper as the Perl one in
 * src/spawn/fork-server-script.ts, speaking the same protocol, built at install time when a C
 * compiler is there (scripts/build-native.mjs). It forks and execs CGI programs for the proxy, so
 * the proxy's own big, multi-threaded process never forks.
 *
 * Run as: proxycore-fork-server <socket path>
 *
 * Requests (stdin, from the proxy): frames of  u32be length | fields joined by NUL:
 *   id, token (32 hex digits), cwd, uid, gid, umask (decimal), stdin ('pipe' | 'null'), argc,
 *   argv[0 .. argc-1], env "K=V"... ('' = leave as is). argv[0] is the file to exec (searched in
 *   the env's PATH, like execvp(3)). stdin 'null': /dev/null, not a connection (no request body).
 * Replies (stdout, one line each; per id S or E, and after S always one X):
 *   S <id> <pid>               forked and exec'd
 *   E <id> <errno> <step>      it could not be started (connect, fork, chdir, setuid, exec ...;
 *                              memory: the helper had no memory left for it, errno ENOMEM);
 *                              nothing more is said about this id
 *   X <id> <wait status> <g>   reaped; g = 1 if its process group still has members (something it
 *                              started lives on), 0 if the group is gone
 *
 * What it does differently from the Perl helper, and why:
 * - vfork(). The child borrows the helper's memory until its execve() instead of copying the page
 *   tables, as glibc's posix_spawn() does; the Perl helper's forks cost ~0.3 ms of CPU each
 *   (page tables, copy-on-write faults, unmapping perl at exec). The child only makes system
 *   calls on arrays built before the fork, and a failed step leaves errno and the step's name in
 *   `struct launch` (shared memory) before _exit(127): the helper knows S or E as soon as vfork()
 *   returns, so there is no exec pipe. The price: the helper waits for each exec, so a program
 *   stuck before it (a chdir into a hung network mount) holds up the launches behind it until it
 *   gets through — as with posix_spawn(), and lighttpd's mod_cgi.
 * - Everything else is the Perl helper's design: stdio by connecting to the proxy's unix socket
 *   (token + fd number on each, no fd passing), the child's steps in libuv's order (setsid, stdio,
 *   chdir, setgroups(0), setgid, setuid, umask, then PR_SET_PDEATHSIG SIGKILL (it dies with the
 *   helper), empty signal mask, execvp(3)'s PATH rules by hand),
 *   every inherited descriptor above 2 closed at start, and a loop that never blocks in read:
 *   stdin is O_NONBLOCK|O_ASYNC, SIGCHLD and SIGIO stay blocked while it works and sigsuspend()
 *   unblocks them atomically while it waits. At EOF on stdin it kills the groups of the programs
 *   it has not reaped (a proxy killed with SIGKILL leaves nobody else to stop them) and exits.
 *
 * Nothing here prints to stdout but the replies; "fork server: ..." on stderr and exit 1 for a
 * fault the proxy reports (a frame it did not send, a failed read or write).
 *
 * Out of memory (a malloc that fails: RLIMIT_AS, RLIMIT_DATA, a cgroup without swap) fails the one
 * request that needed it, "E <id> 12 memory", never the helper: everything a request needs is
 * allocated before its stdio is connected, its frame is dropped unread when even the input buffer
 * cannot hold it, the table of running programs grows before the fork, and a reply that does not
 * fit is written out first (the reply buffer is made at start-up).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELLO 17                         /* 16 token bytes + the fd number */
#define MAX_FRAME (64u << 20)            /* far above ARG_MAX: anything larger is not the proxy's */
static const char SH[] = "/bin/sh";

static struct sockaddr_un sun;
static int devnull = -1;
static pid_t self;                       /* the helper's pid: its children's parent */

/* A growable byte buffer: unparsed input, replies not written yet. */
struct buf { char *p; size_t len, cap; };
static struct buf in, out;

static void die (const char *what) {
  fprintf(stderr, "fork server: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail (const char *what) {
  fprintf(stderr, "fork server: %s\n", what);
  exit(1);
}

/* Room for `more` bytes: 0 (errno ENOMEM) when no memory is left even for exactly that much. */
static int try_reserve (struct buf *b, size_t more) {
  if (b->len + more <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more) cap *= 2;
  char *p = realloc(b->p, cap);
  /* Doubling may ask for far more than is left: then exactly what is needed. */
  if (p == NULL) p = realloc(b->p, cap = b->len + more);
  if (p == NULL) { errno = ENOMEM; return 0; }
  b->p = p;
  b->cap = cap;
  return 1;
}

static void __attribute__((noreturn)) gone (void);
static void flush (void);

static void say (const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  /* No memory to grow it: the replies so far go out first, and a line (< 100 bytes) fits in the
     buffer made at start-up. */
  if (!try_reserve(&out, (size_t)n + 1)) { flush(); if (!try_reserve(&out, (size_t)n + 1)) die("reply buffer"); }
  va_start(ap, fmt);
  vsnprintf(out.p + out.len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  out.len += (size_t)n;
}

static void flush (void) {
  size_t at = 0;
  while (at < out.len) {
    ssize_t n = write(1, out.p + at, out.len - at);
    if (n < 0) { if (errno == EINTR) continue; if (errno == EPIPE) gone(); die("write"); }
    at += (size_t)n;
  }
  out.len = 0;
}

/* Programs started and not reaped yet: pid → request id. A plain array (a few hundred at most). */
struct running { pid_t pid; char id[24]; };
static struct running *run;
static size_t nrun, caprun;

/* Room for one more, made before the fork (0, errno ENOMEM: none): a program started could not be
   remembered, and nobody would ever hear of its exit. */
static int room_to_remember (void) {
  if (nrun < caprun) return 1;
  size_t cap = caprun ? caprun * 2 : 64;
  struct running *r = realloc(run, cap * sizeof *run);
  if (r == NULL) { errno = ENOMEM; return 0; }
  run = r;
  caprun = cap;
  return 1;
}

static void remember (pid_t pid, const char *id) {
  run[nrun].pid = pid;
  snprintf(run[nrun].id, sizeof run[nrun].id, "%s", id);
  nrun++;
}

/* Kill the groups of the programs not reaped yet (each leads its own: vfork returned after its
   setsid(); unreaped, its pid is nobody else's). */
static void kill_running (void) {
  for (size_t i = 0; i < nrun; i++) { kill(-run[i].pid, SIGKILL); kill(run[i].pid, SIGKILL); }
}

/* The proxy is gone (EPIPE on stdout: it died between two reads of stdin): nobody would ever stop
   its programs. */
static void gone (void) {
  kill_running();
  exit(0);
}

static void reap (void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (size_t i = 0; i < nrun; i++) {
      if (run[i].pid != pid) continue;
      /* kill(-pgid, 0): does anything of its group remain? If not, the proxy has nothing to stop. */
      say("X %s %d %d\n", run[i].id, status, kill(-pid, 0) == 0 ? 1 : 0);
      run[i] = run[--nrun];
      break;
    }
    /* Not found: a child whose exec failed (E was said) is reaped without an X. */
  }
}

/* One launch: what the child needs, all built before vfork(); the child writes err and step. */
struct launch {
  int io[3];
  const char *cwd;
  int setids;                            /* uid or gid given: setgroups(0) first */
  long uid, gid, umask;                  /* -1: not given */
  char **argv, **envp, **sh;             /* sh: /bin/sh, <file>, argv[1..], NULL (ENOEXEC) */
  char **try;                            /* the files execvp(3) would try, NULL-terminated */
  volatile int err;
  const char *volatile step;
};

static int next_dir (int e) {
  /* execvp(3): these only end the try of one PATH directory (EACCES is also remembered). */
  return e == EACCES || e == ENOENT || e == ENOTDIR || e == ESTALE || e == ENODEV || e == ETIMEDOUT;
}

/* The child, between vfork() and exec: system calls only, on memory it shares with the helper. */
static void __attribute__((noreturn)) child (struct launch *l) {
  sigset_t none;
  int eacces = 0;
  const char *step = "setsid";
  if (setsid() < 0) goto failed;
  step = "dup2";
  for (int fd = 0; fd < 3; fd++) if (dup2(l->io[fd], fd) < 0) goto failed;
  step = "chdir";
  if (l->cwd[0] != '\0' && chdir(l->cwd) < 0) goto failed;
  if (l->setids) {
    /* No supplementary groups at all (libuv: setgroups(0, NULL) whenever uid or gid is given). The
       helper is single-threaded, so glibc's set*id() are the plain system calls. */
    step = "setgroups";
    if (setgroups(0, NULL) < 0) goto failed;
    step = "setgid";
    if (l->gid >= 0 && setgid((gid_t)l->gid) < 0) goto failed;
    step = "setuid";
    if (l->uid >= 0 && setuid((uid_t)l->uid) < 0) goto failed;
  }
  if (l->umask >= 0) umask((mode_t)l->umask);
  /* Killed with the helper: one that dies (SIGKILL, the OOM killer) before the proxy has read this
     child's S leaves a program whose pid nobody knows, that nobody would ever stop. After the
     user switch (a change of ids clears it); kept across the exec (not a set-id program's). The
     helper may have died before the prctl: then its parent is another and it must not start. */
  step = "prctl";
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) goto failed;
  if (getppid() != self) { errno = ESRCH; goto failed; }
  /* exec resets caught signals to the default (nothing is ignored); the mask is emptied here. */
  step = "sigprocmask";
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) goto failed;
  step = "exec";
  for (char **f = l->try; *f != NULL; f++) {
    execve(*f, l->argv, l->envp);
    if (errno == ENOEXEC) {
      /* No #! line: /bin/sh runs the file. */
      l->sh[1] = *f;
      execve(SH, l->sh, l->envp);
    }
    if (!next_dir(errno)) break;
    if (errno == EACCES) eacces = 1;
  }
  if (eacces && next_dir(errno)) errno = EACCES;
failed:
  l->err = errno ? errno : EIO;
  l->step = step;
  _exit(127);
}

static int hexval (char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A decimal field up to max: '' → -1; anything else is a frame the proxy did not send (a uid past
   uid_t would wrap to another user). */
static long decimal (const char *s, unsigned long max) {
  if (*s == '\0') return -1;
  size_t n = strlen(s);
  if (n > 10 || strspn(s, "0123456789") != n) fail("bad frame: a number field is not a number");
  unsigned long v = strtoul(s, NULL, 10);
  if (v > max) fail("bad frame: a number field is out of range");
  return (long)v;
}

static void close_io (int *io, int first) {
  for (int fd = first; fd < 3; fd++) if (io[fd] >= 0) close(io[fd]);
}

/* E for a request that could not be started; the connections it made so far are closed. */
static void refuse (const char *id, const char *step, int *io, int first) {
  say("E %s %d %s\n", id, errno ? errno : EIO, step);
  close_io(io, first);
}

/* The request id that starts a frame of `len` bytes, of which `avail` are here, copied into `id`:
   1, or 0 when its end is not here yet. A frame whose first field is no id is not the proxy's. */
static int frame_id (const char *p, size_t avail, size_t len, char id[21]) {
  size_t n = 0;
  while (n < len && n < avail && n <= 20 && p[n] != '\0') n++;
  if (n < len && n == avail && n <= 20) return 0;
  if (n == 0 || n > 20) fail("bad frame: id");
  memcpy(id, p, n);
  id[n] = '\0';
  if (strspn(id, "0123456789") != n) fail("bad frame: id");
  return 1;
}

/* E <id> ENOMEM memory: the helper had no memory left for this request. */
static void no_memory (const char *id) {
  say("E %s %d memory\n", id, ENOMEM);
}

static void start (char *frame, size_t len) {
  /* Split on NUL: the frame is copied with one more NUL, so every field is a C string. */
  size_t nf = 1;
  for (size_t i = 0; i < len; i++) if (frame[i] == '\0') nf++;
  if (nf < 8) fail("bad frame: fewer than 8 fields");
  /* The id first: from here on, a failure is this request's alone. */
  char id[21];
  frame_id(frame, len, len, id);
  /* Everything the launch needs is allocated before any connection is made; without memory the
     request fails with nothing to undo (no_memory). */
  char **f = NULL, **av = NULL, **ev = NULL, **sh = NULL, **try = NULL;
  char *tries = NULL;
  f = malloc(nf * sizeof *f);
  if (f == NULL) { no_memory(id); goto done; }
  f[0] = frame;
  for (size_t i = 0, k = 1; i < len; i++) if (frame[i] == '\0') f[k++] = frame + i + 1;

  if (strlen(f[1]) != 32) fail("bad frame: token");
  unsigned char hello[HELLO];
  for (int i = 0; i < 16; i++) {
    int hi = hexval(f[1][2 * i]), lo = hexval(f[1][2 * i + 1]);
    if (hi < 0 || lo < 0) fail("bad frame: token");
    hello[i] = (unsigned char)(hi << 4 | lo);
  }
  struct launch l = { .io = { -1, -1, -1 }, .cwd = f[2], .err = 0, .step = NULL };
  l.uid = decimal(f[3], (uid_t)-1 - 1);
  l.gid = decimal(f[4], (gid_t)-1 - 1);
  l.setids = l.uid >= 0 || l.gid >= 0;
  l.umask = decimal(f[5], 0777);
  int first = strcmp(f[6], "null") == 0 ? 1 : 0;   /* fds to connect: 1-2 with /dev/null as stdin */
  long argc = decimal(f[7], nf);
  if (argc < 1 || (size_t)argc > nf - 8) fail("bad frame: argc");
  char **argv = f + 8;
  size_t nenv = nf - 8 - (size_t)argc;
  char **env = argv + argc;

  /* execve(2)'s arrays, and the files execvp(3) would try: argv[0] if it has a slash, else each
     directory of the environment's PATH ('' = the current directory), /bin and /usr/bin without
     one. */
  av = malloc(((size_t)argc + 1) * sizeof *av);
  ev = malloc((nenv + 1) * sizeof *ev);
  sh = malloc(((size_t)argc + 2) * sizeof *sh);
  if (av == NULL || ev == NULL || sh == NULL) { no_memory(id); goto done; }
  memcpy(av, argv, (size_t)argc * sizeof *av);
  av[argc] = NULL;
  const char *path = NULL;
  size_t ne = 0;
  for (size_t i = 0; i < nenv; i++) {
    char *eq = strchr(env[i], '=');
    if (eq == NULL || eq == env[i]) continue;
    ev[ne++] = env[i];
    if (path == NULL && strncmp(env[i], "PATH=", 5) == 0) path = env[i] + 5;
  }
  ev[ne] = NULL;
  sh[0] = (char *)SH;
  sh[1] = NULL;
  memcpy(sh + 2, argv + 1, ((size_t)argc - 1) * sizeof *sh);
  sh[argc + 1] = NULL;
  const char *file = argv[0];
  if (file[0] == '\0' || strchr(file, '/') != NULL) {
    try = malloc(2 * sizeof *try);
    if (try == NULL) { no_memory(id); goto done; }
    try[0] = (char *)file;
    try[1] = NULL;
  } else {
    const char *dirs = path != NULL ? path : "/bin:/usr/bin";
    size_t ndirs = 1, flen = strlen(file);
    for (const char *p = dirs; *p; p++) if (*p == ':') ndirs++;
    try = malloc((ndirs + 1) * sizeof *try);
    tries = malloc(strlen(dirs) + ndirs * (flen + 3) + 1);
    if (try == NULL || tries == NULL) { no_memory(id); goto done; }
    char *w = tries;
    const char *d = dirs;
    for (size_t k = 0; k < ndirs; k++) {
      const char *colon = strchr(d, ':');
      size_t dl = colon != NULL ? (size_t)(colon - d) : strlen(d);
      try[k] = w;
      if (dl == 0) *w++ = '.';
      else { memcpy(w, d, dl); w += dl; }
      *w++ = '/';
      memcpy(w, file, flen + 1);
      w += flen + 1;
      d = colon != NULL ? colon + 1 : d + dl;
    }
    try[ndirs] = NULL;
  }
  l.argv = av;
  l.envp = ev;
  l.sh = sh;
  l.try = try;
  if (!room_to_remember()) { no_memory(id); goto done; }

  l.io[0] = first ? devnull : -1;
  for (int fd = first; fd < 3; fd++) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) { refuse(id, "connect", l.io, first); goto done; }
    l.io[fd] = s;
    hello[16] = (unsigned char)fd;
    if (connect(s, (struct sockaddr *)&sun, sizeof sun) < 0 || write(s, hello, HELLO) != HELLO) {
      refuse(id, "connect", l.io, first);
      goto done;
    }
  }
  /* The child inherits the helper's signal mask (SIGCHLD, SIGIO blocked) and empties it itself. */
  pid_t pid = vfork();
  if (pid == 0) child(&l);
  if (pid < 0) { refuse(id, "fork", l.io, first); goto done; }
  close_io(l.io, first);
  if (l.step != NULL) say("E %s %d %s\n", id, l.err, l.step);
  else { say("S %s %d\n", id, (int)pid); remember(pid, id); }
done:
  free(tries);
  free(try);
  free(sh);
  free(ev);
  free(av);
  free(f);
}

/* Bytes of a frame refused for want of memory still to come: dropped as they arrive. */
static size_t skip;

/* Read everything available: 1 at EOF (the proxy closed us or is gone), 0 when stdin is drained,
   2 when the buffer is full and cannot grow (what is in it is to be parsed, then read again). */
static int read_input (void) {
  for (;;) {
    if (in.cap - in.len < 65536 && !try_reserve(&in, 65536) && in.len == in.cap) return 2;
    ssize_t n = read(0, in.p + in.len, in.cap - in.len);
    if (n == 0) return 1;
    if (n > 0) {
      in.len += (size_t)n;
      if (skip > 0) {
        /* Only the refused frame's bytes are here while skipping (the buffer was emptied). */
        size_t d = skip < in.len ? skip : in.len;
        memmove(in.p, in.p + d, in.len - d);
        in.len -= d;
        skip -= d;
      }
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) return 0;
    die("read");
  }
}

/* No memory for the frame at the head of the input, `len` bytes long: once its id is here, E for it
   and its bytes are dropped, those here now and the rest as they come. Until then, nothing. */
static void refuse_head (size_t len) {
  char id[21];
  if (!frame_id(in.p + 4, in.len - 4, len, id)) return;
  no_memory(id);
  skip = 4 + len - in.len;
  in.len = 0;
}

static void wake (int sig) { (void)sig; }

int main (int argc, char **argv) {
  if (argc < 2 || strlen(argv[1]) >= sizeof sun.sun_path) fail("usage: proxycore-fork-server <socket path>");
  sun.sun_family = AF_UNIX;
  strcpy(sun.sun_path, argv[1]);

  /* Descriptors the proxy inherited without close-on-exec reach us too; none may reach a CGI
     program. */
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
  {
    /* Kernels before 5.9: close what /proc/self/fd lists, 1024 at a time, until nothing is left. */
    for (int n = 1024; n == 1024;) {
      DIR *d = opendir("/proc/self/fd");
      if (d == NULL) break;
      int own = dirfd(d), fds[1024];
      struct dirent *e;
      n = 0;
      while ((e = readdir(d)) != NULL && n < 1024) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != own) fds[n++] = fd;
      }
      closedir(d);
      for (int i = 0; i < n; i++) close(fds[i]);
    }
  }
  self = getpid();
  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) die("/dev/null");

  /* Handlers only so that sigsuspend() returns: SIGCHLD is ignored and SIGIO kills by default.
     SIGPIPE is caught too, so that a write to a closed peer fails with EPIPE instead of killing
     us: a stdio connection the proxy closed before its hello (libuv at EMFILE accepts and closes
     what is pending) fails that one launch (E ... connect), not every program in flight. Caught,
     not ignored: exec sets caught signals back to the default, an ignored one would stay ignored
     in every program. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = wake;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGCHLD, &sa, NULL) < 0 || sigaction(SIGIO, &sa, NULL) < 0 || sigaction(SIGPIPE, &sa, NULL) < 0) die("sigaction");
  sigset_t wakers, none;
  sigemptyset(&wakers);
  sigaddset(&wakers, SIGCHLD);
  sigaddset(&wakers, SIGIO);
  sigemptyset(&none);
  if (sigprocmask(SIG_BLOCK, &wakers, NULL) < 0) die("sigprocmask");

  /* Non-blocking, and SIGIO to us whenever there is input or EOF. */
  int flags = fcntl(0, F_GETFL);
  if (fcntl(0, F_SETOWN, getpid()) < 0 || flags < 0 || fcntl(0, F_SETFL, flags | O_NONBLOCK | O_ASYNC) < 0) die("fcntl");
  /* The buffers' first memory now: a reply always fits (see say()), the input has its read size. */
  if (!try_reserve(&out, 4096) || !try_reserve(&in, 65536)) die("malloc");

  for (;;) {
    int got = read_input(), eof = got == 1;
    size_t at = 0;
    while (in.len - at >= 4) {
      const unsigned char *h = (const unsigned char *)in.p + at;
      uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
      if (len > MAX_FRAME) fail("bad frame: too long");
      if (in.len - at - 4 < len) break;
      /* One byte more for the last field's NUL. */
      char *frame = malloc((size_t)len + 1);
      if (frame != NULL) {
        memcpy(frame, in.p + at + 4, len);
        frame[len] = '\0';
        start(frame, len);
        free(frame);
      } else {
        char id[21];
        frame_id(in.p + at + 4, len, len, id);
        no_memory(id);
      }
      at += 4 + (size_t)len;
    }
    memmove(in.p, in.p + at, in.len - at);
    in.len -= at;
    /* A frame begun: room for all of it at once (one realloc, not one per read), or it is refused. */
    if (in.len >= 4) {
      const unsigned char *h = (const unsigned char *)in.p;
      uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
      if (len > MAX_FRAME) fail("bad frame: too long");
      if (4 + (size_t)len > in.cap && !try_reserve(&in, 4 + (size_t)len - in.len)) refuse_head(len);
    }
    /* The proxy closed our stdin or is gone. Closing, it stopped its programs first and nothing
       is left here; gone (SIGKILL, a crash), nobody would ever stop the programs not reaped yet, so
       their groups are killed. */
    if (eof) {
      kill_running();
      flush();
      return 0;
    }
    reap();
    flush();
    /* Stopped with input left unread: no SIGIO would come for it. */
    if (got != 2) sigsuspend(&none);
  }
}
