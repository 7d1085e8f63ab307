/**
 * The fork server's Perl source, written to a file and run as `perl <file> <socket path> <arch>`
 * (fork-server.ts).
 * Kept as a string so it ships from src (tap) and dist (tsc) alike. Hand-written: no Node library
 * forks from a small helper process, and Node's own spawn() forks the whole Node process.
 *
 * Plain perl, with no module but the strict and warnings pragmas (perl-base is Essential on
 * Debian, so it is always there); syscalls by number for x64 and the generic table (arm64,
 * riscv64, loong64): see `forkServerUnsupported()`.
 * Nothing in the child may print: after its dup()s, STDERR is the CGI program's stderr.
 */
export const FORK_SERVER_PL = String.raw`
# proxycore fork server: forks and execs CGI programs for the proxy, so the proxy's own big,
# multi-threaded process never forks.
#
# Run as: perl fork-server.pl <socket path> <arch>   (arch: Node's process.arch, for syscall numbers)
#
# Requests (stdin, from the proxy): frames of  u32be length | fields joined by NUL:
#   id, token (32 hex digits), cwd, uid, gid, umask (decimal), stdin ('pipe' | 'null'), argc,
#   argv[0 .. argc-1], env "K=V"... ('' = leave as is). argv[0] is the file to exec (searched in
#   the env's PATH, like execvp(3)). stdin 'null': /dev/null, not a connection (no request body).
# Replies (stdout, one line each; per id S or E, and after S always one X):
#   S <id> <pid>               forked and exec'd
#   E <id> <errno> <step>      it could not be started (connect, fork, chdir, setuid, exec ...);
#                              nothing more is said about this id
#   X <id> <wait status> <g>   reaped; g = 1 if its process group still has members (something it
#                              started lives on), 0 if the group is gone
#
# Cheap forks. A forked perl pays for every page it touches before exec: its page-table entries
# for code are not copied (each first touch faults), and every heap page it writes is copied
# (perl writes reference counts wherever it reads). Measured per request under load, when the
# child connected, built %ENV and called POSIX itself: 0.9 ms of CPU between fork and exec, twice
# what the helper spends. So everything that can happen before the fork happens here, in the
# parent (stdio connections, execve's argv and environment arrays), the child makes raw syscalls
# by number, execve(2) included, and no module but the pragmas is loaded (POSIX alone made each
# fork ~0.09 ms dearer). The parent does not wait for the exec: it forks the next frames
# meanwhile, and a child stuck before its exec (a hung chdir) holds up no other request.
# The parent pays too: after each fork every page it writes faults once more (copy-on-write, or
# taking the page back once the child has exec'd). Its heap is ~80 pages and a request touched
# nearly all of them; building %ENV for exec touched ~25 of them, so it no longer does (measured
# under load: 80-88 faults and ~0.34 ms of helper CPU per request before, 52-56 and ~0.28 ms after).
#
# Stdio without fd passing: for each of fd 0-2 (1-2 with stdin 'null') the parent connects to the
# proxy's unix socket (argv 0, in a private 0700 directory), writes token + fd number (17 bytes),
# and the child dup()s the connections onto 0, 1, 2. Every other descriptor is close-on-exec.
#
# Raw descriptors, no perl filehandles, on the per-request path: socket, connect, the exec pipe,
# their reads, writes, fcntl()s and closes are syscalls by number. A perl handle costs 3-6 syscalls
# of its own each time one is made (F_SETFD twice, a TCGETS ioctl and an lseek for PerlIO, an
# fstat for a file): strace counted ~45 syscalls per request with handles, 21 without. /dev/null
# is opened once, at start-up.
#
# The loop never blocks in read: stdin and the exec pipes are O_NONBLOCK|O_ASYNC (SIGIO), SIGCHLD
# and SIGIO stay blocked while it works, and sigsuspend() unblocks them atomically while it waits.
# A signal arriving at any other moment stays pending and ends the next sigsuspend() at once, so no
# exit and no request can be missed (select() + a SIGCHLD flag would race: perl runs signal
# handlers only between ops, and a child dying just before select() would go unnoticed).
use strict;
use warnings;

my ($path, $arch) = @ARGV;
$0 = "proxycore-fork-server $path";    # ps shows what it is and which proxy socket it serves

# Syscall numbers: x86-64's table, and the generic one of arm64, riscv64 and loongarch64 (which has
# dup3 but no dup2). The proxy runs the fork server only on these (fork-server.ts).
my %SYS = $arch eq 'x64'
  ? (read => 0, write => 1, close => 3, socket => 41, connect => 42, fcntl => 72, pipe2 => 293, dup3 => 292, setsid => 112, setgroups => 116, setgid => 106, setuid => 105, prctl => 157, getppid => 110, sigprocmask => 14, sigsuspend => 130, execve => 59, exit_group => 231)
  : (read => 63, write => 64, close => 57, socket => 198, connect => 203, fcntl => 25, pipe2 => 59, dup3 => 24, setsid => 157, setgroups => 159, setgid => 144, setuid => 146, prctl => 167, getppid => 173, sigprocmask => 135, sigsuspend => 133, execve => 221, exit_group => 94);
# The same on all of them: errno values, signal numbers, fcntl commands and flags, AF_UNIX and
# SOCK_STREAM.
my ($EINTR, $EAGAIN, $EIO, $EPIPE, $ESRCH) = (4, 11, 5, 32, 3);
my ($PR_SET_PDEATHSIG, $SIGKILL) = (1, 9);
# execvp(3)'s: ENOEXEC runs the file with /bin/sh; EACCES is remembered and the search goes on;
# these others only end the try of one PATH directory.
my ($ENOEXEC, $EACCES) = (8, 13);
my %NEXT_DIR = map { $_ => 1 } ($EACCES, 2, 20, 116, 19, 110);    # and ENOENT ENOTDIR ESTALE ENODEV ETIMEDOUT
my $SH = '/bin/sh';
my ($SIG_BLOCK, $SIG_SETMASK) = (0, 2);
my ($F_GETFL, $F_SETFL, $F_SETOWN, $O_NONBLOCK, $O_ASYNC, $O_CLOEXEC) = (3, 4, 8, 0x800, 0x2000, 0x80000);
my ($AF_UNIX, $SOCK_STREAM) = (1, 1);
my $WNOHANG = 1;
my $SUN = pack('S Z108', 1, $path);    # struct sockaddr_un { AF_UNIX, path }
# Kernel sigsets: bit n-1 is signal n. SIGCHLD = 17, SIGIO = 29.
my $WAKE = pack('Q', (1 << 16) | (1 << 28));
my $NONE = pack('Q', 0);
my $NULLP = pack('p', undef);    # the NULL that ends execve(2)'s argv and envp

# Descriptors the proxy inherited without close-on-exec are passed on by libuv to us as well; none
# may reach a CGI program, so they go now (perl itself holds none at this point).
if (opendir(my $dh, '/proc/self/fd')) {
  my $own = fileno($dh);
  my @fds = grep { /^\d+$/ && $_ > 2 && $_ != $own } readdir($dh);
  closedir($dh);
  syscall($SYS{close}, 0 + $_) for @fds;
}

my $PID = $$;   # perl asks the kernel again at every $$
open(my $devnull, '<', '/dev/null') or die "fork server: /dev/null: $!\n";
my $DEVNULL = fileno($devnull);
my %execpipe;   # pid => read end (fd) of its close-on-exec pipe, until S or E was said
my %idof;       # pid => request id, until it failed (E) or was reaped (X)
my $in = '';    # unparsed request bytes
my $out = '';   # replies not written yet

# Handlers only so that sigsuspend() returns: SIGCHLD is ignored and SIGIO kills by default.
$SIG{CHLD} = sub {};
$SIG{IO} = sub {};
# perl ignores SIGFPE at start-up, and an ignored signal stays ignored across fork and exec: back to
# the default, which the proxy started us with, so that CGI programs start as spawn() starts them.
# (perl's own arithmetic never raises it: division by zero is a perl error.)
$SIG{FPE} = 'DEFAULT';
# SIGPIPE is caught, so that a write to a closed peer fails with EPIPE instead of killing us: a stdio
# connection the proxy closed before its hello (libuv at EMFILE accepts and closes what is pending)
# fails that one launch (E ... connect), not every program in flight. Caught, not ignored: exec sets
# caught signals back to the default, an ignored one would stay ignored in every program.
$SIG{PIPE} = sub {};
syscall($SYS{sigprocmask}, $SIG_BLOCK, $WAKE, 0, 8) == 0 or die "fork server: sigprocmask: $!\n";

# Unbuffered, whole lines (a buffered STDOUT would be flushed again by every fork).
sub flush {
  while (length $out) {
    my $n = syswrite(STDOUT, $out);
    if (!defined $n) { next if $! == $EINTR; gone() if $! == $EPIPE; die "fork server: write: $!\n" }
    substr($out, 0, $n) = '';
  }
}

# Non-blocking, and SIGIO to us whenever there is input or EOF.
sub notify_on_input {
  my ($fd) = @_;
  syscall($SYS{fcntl}, $fd, $F_SETOWN, $PID) == 0 or die "fork server: F_SETOWN: $!\n";
  my $flags = syscall($SYS{fcntl}, $fd, $F_GETFL, 0);
  $flags >= 0 or die "fork server: F_GETFL: $!\n";
  syscall($SYS{fcntl}, $fd, $F_SETFL, $flags | $O_NONBLOCK | $O_ASYNC) == 0 or die "fork server: F_SETFL: $!\n";
}

# The proxy closed our stdin or is gone (EOF, or EPIPE on stdout). Closing, it stopped its programs
# first and nothing is left here; gone (SIGKILL, a crash), nobody would ever stop the programs not
# reaped yet, so their groups are killed, and each one itself (one still before its setsid() is in
# our group).
sub gone {
  for my $pid (keys %idof) { kill('KILL', -$pid); kill('KILL', $pid) }
  exit 0;
}

sub close_fds { syscall($SYS{close}, $_) for grep { defined } @_ }

# Read everything available; true at EOF (the proxy closed us or is gone).
sub read_input {
  for (;;) {
    my $n = sysread(STDIN, $in, 65536, length $in);
    return 1 if defined $n && $n == 0;
    next if defined $n;
    return 0 if $! == $EAGAIN || $! == $EINTR;
    die "fork server: read: $!\n";
  }
}

# The child, between fork and exec: syscalls only (see "Cheap forks"). Never returns. The order is
# libuv's (uv__process_child_init): new session, stdio, cwd, groups, gid, uid, then umask, the
# parent-death signal (not libuv's), signal mask, exec. On failure "errno step" goes to the exec
# pipe and it exits 127.
sub child {
  my ($w, $io, $cwd, $uid, $gid, $umask, $exec) = @_;
  no warnings;    # nothing may reach fd 2: it is the program's stderr
  # Own session and process group: the proxy stops the whole group with kill(-pid).
  syscall($SYS{setsid}) >= 0 or failed($w, 'setsid');
  for my $fd (0 .. 2) { syscall($SYS{dup3}, $io->[$fd], $fd, 0) >= 0 or failed($w, 'dup2') }
  $cwd eq '' or chdir($cwd) or failed($w, 'chdir');
  if ($uid ne '' || $gid ne '') {
    # No supplementary groups at all (libuv: setgroups(0, NULL) whenever uid or gid is given).
    syscall($SYS{setgroups}, 0, 0) == 0 or failed($w, 'setgroups');
    $gid eq '' or syscall($SYS{setgid}, 0 + $gid) == 0 or failed($w, 'setgid');
    $uid eq '' or syscall($SYS{setuid}, 0 + $uid) == 0 or failed($w, 'setuid');
  }
  umask($umask) if $umask ne '';
  # Killed with the helper: one that dies (SIGKILL, the OOM killer) before the proxy has read this
  # child's S leaves a program whose pid nobody knows, that nobody would ever stop. After the user
  # switch (a change of ids clears it); kept across the exec (not a set-id program's). The helper
  # may have died before the prctl: then its parent is another and it must not start.
  syscall($SYS{prctl}, $PR_SET_PDEATHSIG, $SIGKILL, 0, 0, 0) == 0 or failed($w, 'prctl');
  if (syscall($SYS{getppid}) != $PID) { $! = $ESRCH; failed($w, 'prctl') }
  # exec resets caught signals to the default, and none is ignored (the proxy started us with every
  # signal at its default, and SIGFPE, which perl ignores, was set back at start-up); the mask must
  # be emptied by hand.
  syscall($SYS{sigprocmask}, $SIG_SETMASK, $NONE, 0, 8) == 0 or failed($w, 'sigprocmask');
  # execvp(3), by hand: the files to try, each with execve(2) and the arrays made in the parent.
  my ($try, $argvp, $envp, $argv) = @$exec;
  my $eacces = 0;
  for my $file (@$try) {
    syscall($SYS{execve}, $file, $argvp, $envp);
    if ($! == $ENOEXEC) {
      # No #! line: /bin/sh runs the file (only on this rare path does the child allocate).
      my @sh = ($SH, $file, @$argv[1 .. $#$argv]);
      my $shp = pack('p*', @sh) . $NULLP;
      syscall($SYS{execve}, $SH, $shp, $envp);
    }
    last unless $NEXT_DIR{$! + 0};
    $eacces = 1 if $! == $EACCES;
  }
  $! = $EACCES if $eacces && $NEXT_DIR{$! + 0};
  failed($w, 'exec');
}

sub failed {
  my ($w, $step) = @_;
  my $msg = (($! + 0) || $EIO) . " $step";
  syscall($SYS{write}, $w, $msg, length $msg);
  syscall($SYS{exit_group}, 127);
}

# E for a request that could not be started; the connections it made so far are closed.
sub refuse {
  my ($id, $step, @fds) = @_;
  $out .= "E $id " . (($! + 0) || $EIO) . " $step\n";
  close_fds(@fds);
  return;
}

sub start {
  my @f = split /\0/, $_[0], -1;
  my ($id, $token, $cwd, $uid, $gid, $umask, $stdin, $argc) = splice(@f, 0, 8);
  my @argv = splice(@f, 0, $argc);
  my $hello = pack('H*', $token);
  my $first = $stdin eq 'null' ? 1 : 0;    # fds to connect: 1-2 with /dev/null as stdin, else 0-2
  my @io = ($first ? $DEVNULL : undef);
  for my $fd ($first .. 2) {
    my $s = syscall($SYS{socket}, $AF_UNIX, $SOCK_STREAM | $O_CLOEXEC, 0);
    $s >= 0 or return refuse($id, 'connect', @io[$first .. 2]);
    $io[$fd] = $s;
    my $said = $hello . chr($fd);
    syscall($SYS{connect}, $s, $SUN, length $SUN) == 0 && syscall($SYS{write}, $s, $said, 17) == 17
      or return refuse($id, 'connect', @io[$first .. 2]);
  }
  # execve(2)'s arguments, made before the fork: argv and exactly the given environment as
  # NULL-terminated arrays of pointers into strings that live until start() returns, and the files
  # execvp(3) would try (argv[0] if it has a slash, else each directory of the environment's PATH).
  # The child then only makes the syscall. Rebuilding %ENV instead cost dozens of allocations a
  # request, and every page the parent writes is a copy-on-write fault after each fork.
  my $file = $argv[0];
  my @try = ($file);
  if ($file ne '' && index($file, '/') < 0) {
    my ($path) = map { substr($_, 5) } grep { substr($_, 0, 5) eq 'PATH=' } @f;
    @try = map { ($_ eq '' ? '.' : $_) . "/$file" } (defined $path ? split(/:/, $path, -1) : ('/bin', '/usr/bin'));
    @try = ($file) if !@try;    # PATH= (empty): the current directory
  }
  my @exec = (\@try, pack('p*', @argv) . $NULLP, pack('p*', grep { index($_, '=') > 0 } @f) . $NULLP, \@argv);
  my $ends = pack('i2', -1, -1);
  syscall($SYS{pipe2}, $ends, $O_CLOEXEC) == 0 or return refuse($id, 'fork', @io[$first .. 2]);
  my ($r, $w) = unpack('i2', $ends);
  my $pid = fork();
  if (!defined $pid) { close_fds($r, $w); return refuse($id, 'fork', @io[$first .. 2]) }
  child($w, \@io, $cwd, $uid, $gid, $umask, \@exec) if $pid == 0;
  close_fds($w, @io[$first .. 2]);
  # Not waited for here: the next frames are forked meanwhile (check_exec, SIGIO at EOF).
  notify_on_input($r);
  $execpipe{$pid} = $r;
  $idof{$pid} = $id;
}

# EOF on the exec pipe: the exec succeeded (the write end was close-on-exec). Data: errno + step,
# and the child exits 127 (reaped without an X).
sub check_exec {
  my ($pid) = @_;
  my $r = $execpipe{$pid};
  my $buf = "\0" x 256;
  my $n = syscall($SYS{read}, $r, $buf, 256);
  return if $n < 0 && ($! == $EAGAIN || $! == $EINTR);
  delete $execpipe{$pid};
  syscall($SYS{close}, $r);
  if ($n > 0) { $out .= 'E ' . delete($idof{$pid}) . ' ' . substr($buf, 0, $n) . "\n" }
  else { $out .= "S $idof{$pid} $pid\n" }
}

sub reap {
  while ((my $pid = waitpid(-1, $WNOHANG)) > 0) {
    my $status = $?;
    check_exec($pid) if $execpipe{$pid};    # its pipe is closed now: S or E goes out before X
    my $id = delete $idof{$pid};
    # kill(-pgid, 0): does anything of its group remain? If not, the proxy has nothing to stop.
    $out .= "X $id $status " . (kill(0, -$pid) ? 1 : 0) . "\n" if defined $id;
  }
}

notify_on_input(0);
for (;;) {
  my $eof = read_input();
  while (length($in) >= 4) {
    my $len = unpack('N', $in);
    last if length($in) < 4 + $len;
    start(substr($in, 4, $len));
    substr($in, 0, 4 + $len) = '';
  }
  gone() if $eof;
  check_exec($_) for keys %execpipe;
  reap();
  flush();
  syscall($SYS{sigsuspend}, $NONE, 8);
}
`
