/**
 * The fork server's Perl source, run as `perl -e FORK_SERVER_PL -- <socket path>` (fork-server.ts).
 * Kept as a string so it ships from src (tap) and dist (tsc) alike. Hand-written: no Node library
 * forks from a small helper process, and Node's own spawn() forks the whole Node process.
 *
 * perl-base only (POSIX, Socket, Fcntl): perl-base is Essential on Debian, so it is always there.
 * Nothing in here may print: after fork, STDERR is the CGI program's stderr.
 */
export const FORK_SERVER_PL = String.raw`
# proxycore fork server: forks and execs CGI programs for the proxy, so the proxy's own big,
# multi-threaded process never forks (measured: 1.2-2 ms of proxy CPU per fork; this perl: ~0.15 ms).
#
# Requests (stdin, from the proxy): frames of  u32be length | fields joined by NUL:
#   id, token (32 hex digits), cwd, uid, gid, umask (decimal), stdin ('pipe' | 'null'), argc,
#   argv[0 .. argc-1], env "K=V"... ('' = leave as is). argv[0] is the file to exec (searched in
#   the env's PATH, like execvp(3)). stdin 'null': /dev/null, not a connection (no request body).
# Replies (stdout, one line each; per id always in this order):
#   P <id> <pid>               forked
#   S <id>                     exec succeeded (the child's close-on-exec pipe closed without a word)
#   E <id> <errno> <step>      the child failed in <step> (connect, chdir, setuid, exec ...) and
#                              exits 127; nothing more is said about this id
#   X <id> <wait status> <g>   reaped (after S); g = 1 if its process group still has members
#                              (something it started lives on), 0 if the group is gone
#
# Stdio without fd passing: the child connects to the proxy's unix socket (argv 0, in a private
# 0700 directory) three times (twice with stdin 'null'), writes token + fd number (17 bytes) on
# each connection, and dup2()s them onto 0, 1, 2. Every other descriptor is close-on-exec (perl
# sets FD_CLOEXEC above $^F = 2).
#
# The loop never blocks in read: stdin and the exec pipes are O_NONBLOCK|O_ASYNC (SIGIO), SIGCHLD
# and SIGIO stay blocked while it works, and sigsuspend() unblocks them atomically while it waits.
# A signal arriving at any other moment stays pending and ends the next sigsuspend() at once, so
# no exit and no request can be missed (select() + a SIGCHLD flag would race: perl runs signal
# handlers only between ops, and a child dying just before select() would go unnoticed).
use strict;
use warnings;
use POSIX ();
use Socket qw(PF_UNIX SOCK_STREAM sockaddr_un);
use Fcntl qw(F_GETFL F_SETFL F_SETOWN O_NONBLOCK O_ASYNC);

my $path = $ARGV[0];
$0 = "proxycore-fork-server $path";    # ps shows what it is and which proxy socket it serves

# setgroups(0, NULL), as libuv does before setgid: perl has no builtin for an empty group list
# ($) = "G G" would leave the list {G}). Syscall numbers of the common 64-bit ABIs.
my $SYS_setgroups = { x86_64 => 116, aarch64 => 159, riscv64 => 159, loongarch64 => 159 }->{(POSIX::uname())[4]};

# Descriptors the proxy inherited without close-on-exec are passed on by libuv to us as well; none
# may reach a CGI program, so they go now (perl itself holds none at this point).
if (opendir(my $dh, '/proc/self/fd')) {
  my $own = fileno($dh);
  my @fds = grep { /^\d+$/ && $_ > 2 && $_ != $own } readdir($dh);
  closedir($dh);
  POSIX::close($_) for @fds;
}

my %execpipe;   # pid => read end of its close-on-exec pipe, until S or E was sent
my %idof;       # pid => request id, until it failed (E) or was reaped (X)
my $in = '';    # unparsed request bytes

# Handlers only so that sigsuspend() returns: SIGCHLD is ignored and SIGIO kills by default.
$SIG{CHLD} = sub {};
$SIG{IO} = sub {};
my $wake = POSIX::SigSet->new(POSIX::SIGCHLD(), POSIX::SIGPOLL());
my $none = POSIX::SigSet->new();
POSIX::sigprocmask(POSIX::SIG_BLOCK(), $wake) or die "fork server: sigprocmask: $!\n";

# Non-blocking, and SIGIO to us whenever there is input or EOF.
sub notify_on_input {
  my ($fh) = @_;
  fcntl($fh, F_SETOWN, 0 + $$) or die "fork server: F_SETOWN: $!\n";
  my $flags = fcntl($fh, F_GETFL, 0) or die "fork server: F_GETFL: $!\n";
  fcntl($fh, F_SETFL, $flags | O_NONBLOCK | O_ASYNC) or die "fork server: F_SETFL: $!\n";
}

# Unbuffered, whole lines (a buffered STDOUT would be flushed again by every fork and exec).
sub reply {
  my ($line) = @_;
  while (length $line) {
    my $n = syswrite(STDOUT, $line);
    if (!defined $n) { next if $! == POSIX::EINTR(); die "fork server: write: $!\n" }
    substr($line, 0, $n) = '';
  }
}

# Read everything available; true at EOF (the proxy closed us or is gone).
sub read_input {
  for (;;) {
    my $n = sysread(STDIN, $in, 65536, length $in);
    return 1 if defined $n && $n == 0;
    next if defined $n;
    return 0 if $! == POSIX::EAGAIN() || $! == POSIX::EINTR();
    die "fork server: read: $!\n";
  }
}

# The child, between fork and exec. Never returns. The order is libuv's (uv__process_child_init):
# new session, stdio, cwd, groups, gid, uid, then umask, environment, signals, exec.
sub child {
  my ($w, $token, $cwd, $uid, $gid, $umask, $stdin, $argv, $env) = @_;
  no warnings;    # nothing may reach fd 2: it is the program's stderr
  my $step = 'setsid';
  my $errno = 0;
  my $fail = sub { $errno = $! + 0; die "\n" };
  eval {
    # Own session and process group: the proxy stops the whole group with kill(-pid).
    POSIX::setsid() > 0 or $fail->();
    # Connect while still privileged: the socket directory is the proxy user's, mode 0700.
    $step = 'connect';
    my $tok = pack('H*', $token);
    my @s;
    if ($stdin eq 'null') { $step = 'open /dev/null'; open($s[0], '<', '/dev/null') or $fail->(); $step = 'connect' }
    for my $fd (($stdin eq 'null' ? 1 : 0) .. 2) {
      socket($s[$fd], PF_UNIX, SOCK_STREAM, 0) or $fail->();
      connect($s[$fd], sockaddr_un($path)) or $fail->();
      my $hello = $tok . chr($fd);
      (syswrite($s[$fd], $hello) // -1) == length($hello) or $fail->();
    }
    $step = 'dup2';
    for my $fd (0 .. 2) { defined(POSIX::dup2(fileno($s[$fd]), $fd)) or $fail->() }
    if ($cwd ne '') { $step = 'chdir'; chdir($cwd) or $fail->() }
    if ($uid ne '' || $gid ne '') {
      # No supplementary groups at all (libuv: setgroups(0, NULL) whenever uid or gid is given).
      $step = 'setgroups';
      if (defined $SYS_setgroups) { syscall($SYS_setgroups, 0, 0) == 0 or $fail->() }
      elsif ($gid ne '') { $) = "$gid $gid" }
      if ($gid ne '') { $step = 'setgid'; POSIX::setgid($gid) or $fail->() }
      if ($uid ne '') { $step = 'setuid'; POSIX::setuid($uid) or $fail->() }
    }
    umask($umask) if $umask ne '';
    # Exactly the given environment: %ENV is perl's view of environ, which exec passes on.
    %ENV = ();
    for my $kv (@$env) {
      my $eq = index($kv, '=');
      $ENV{substr($kv, 0, $eq)} = substr($kv, $eq + 1) if $eq > 0;
    }
    # Dispositions: exec resets caught signals to the default, and nothing here is ignored (the
    # proxy started us with every signal at its default); the mask must be emptied by hand.
    $SIG{CHLD} = 'DEFAULT';
    $SIG{IO} = 'DEFAULT';
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $none);
    $step = 'exec';
    exec { $argv->[0] } @$argv;    # execvp(3): PATH search, ENOEXEC scripts run by /bin/sh
    $fail->();
  };
  $errno ||= POSIX::EIO();
  syswrite($w, "$errno $step");
  POSIX::_exit(127);
}

sub start {
  my @f = split /\0/, $_[0], -1;
  my ($id, $token, $cwd, $uid, $gid, $umask, $stdin, $argc) = splice(@f, 0, 8);
  my @argv = splice(@f, 0, $argc);
  my ($r, $w);
  my $pid = pipe($r, $w) ? fork() : undef;
  if (!defined $pid) {
    reply("E $id " . ($! + 0) . " fork\n");
    close $r if $r;
    close $w if $w;
    return;
  }
  if ($pid == 0) {
    close $r;
    child($w, $token, $cwd, $uid, $gid, $umask, $stdin, \@argv, \@f);
  }
  close $w;
  notify_on_input($r);
  $execpipe{$pid} = $r;
  $idof{$pid} = $id;
  reply("P $id $pid\n");
}

# EOF on the exec pipe: exec succeeded (the write end was close-on-exec). Data: errno + step.
sub check_exec {
  my ($pid) = @_;
  my $r = $execpipe{$pid};
  my $n = sysread($r, my $buf, 256);
  return if !defined $n && ($! == POSIX::EAGAIN() || $! == POSIX::EINTR());
  delete $execpipe{$pid};
  close $r;
  if ($n) { reply('E ' . delete($idof{$pid}) . " $buf\n") }
  else { reply("S $idof{$pid}\n") }
}

sub reap {
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $status = $?;
    check_exec($pid) if $execpipe{$pid};    # its pipe is closed now: S or E goes out before X
    my $id = delete $idof{$pid};
    # kill(-pgid, 0): does anything of its group remain? If not, the proxy has nothing to stop.
    reply("X $id $status " . (kill(0, -$pid) ? 1 : 0) . "\n") if defined $id;
  }
}

notify_on_input(\*STDIN);
for (;;) {
  my $eof = read_input();
  while (length($in) >= 4) {
    my $len = unpack('N', $in);
    last if length($in) < 4 + $len;
    start(substr($in, 4, $len));
    substr($in, 0, 4 + $len) = '';
  }
  # The proxy closed our stdin (closing) or is gone: its children are its own to stop.
  exit 0 if $eof;
  check_exec($_) for keys %execpipe;
  reap();
  POSIX::sigsuspend($none);
}
`
