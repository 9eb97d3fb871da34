/*
 * A container trying to hurt or fool the agent (built with `gcc -static` by
 * `glasshouse_tests::build_hostile`, run inside a container). Every attack
 * runs for SECS seconds, then exits 0:
 *   hostile bigargv SECS    fork + execve(self) with a 1 MiB argv (16 x 64 KiB)
 *   hostile dict SECS       distinct strings as fast as it can (over 100,000
 *                           a second here): execs with 400 unique arguments,
 *                           and files created under /etc with unique names
 *   hostile badutf8 SECS    files under /etc and an exec'd copy of this binary
 *                           whose names, and arguments, are invalid UTF-8
 *   hostile forkbomb SECS   fork without end (bounded by the container's pids limit)
 *   hostile execstorm SECS  fork + execve(self) + wait as fast as possible
 *   hostile as ARGV0 PATH [ARG...]   execve(PATH) with argv[0] = ARGV0 (a
 *                           renamed binary posing as a kernel thread)
 *   hostile selfdelete SECS unlink its own executable, then (still running
 *                           from the deleted file) create /etc/gh-deleted and
 *                           run /bin/true after-delete, once a second
 *   hostile                 (no arguments, or "noop ...") exit 0 at once
 * Prints what it did on stdout.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *self;

static void run(const char *path, char **argv)
{
	char *envp[] = {NULL};
	pid_t pid = fork();
	if (pid == 0) {
		execve(path, argv, envp);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static long bigargv(double secs)
{
	enum { ARGS = 16, LEN = 64 * 1024 };
	char *argv[ARGS + 3];
	argv[0] = self;
	argv[1] = "noop";
	for (int i = 0; i < ARGS; i++) {
		argv[i + 2] = malloc(LEN);
		memset(argv[i + 2], 'A' + i, LEN - 1);
		argv[i + 2][LEN - 1] = 0;
	}
	argv[ARGS + 2] = NULL;
	long n = 0;
	for (double end = now() + secs; now() < end; n++)
		run(self, argv);
	return n;
}

static long dict(double secs)
{
	/* Each exec carries 400 unique 16-byte arguments (6.8 KiB: under the
	 * agent's 8 KiB argv cap, so every one is a new string to intern), and
	 * 10 files with unique names are created under /etc between execs. */
	enum { ARGS = 400 };
	static char args[ARGS][24];
	static char *argv[ARGS + 3];
	char path[64];
	long strings = 0, k = 0;
	argv[0] = self;
	argv[1] = "noop";
	for (int i = 0; i < ARGS; i++)
		argv[i + 2] = args[i];
	argv[ARGS + 2] = NULL;
	double start = now(), end = start + secs;
	while (now() < end) {
		for (int i = 0; i < ARGS; i++, k++)
			snprintf(args[i], sizeof(args[i]), "fl%014ld", k);
		run(self, argv);
		strings += ARGS;
		for (int i = 0; i < 10; i++, k++) {
			snprintf(path, sizeof(path), "/etc/flood-%ld", k);
			int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			if (fd >= 0) {
				close(fd);
				unlink(path);
				strings++;
			}
		}
	}
	printf("dict strings/s %.0f\n", strings / (now() - start));
	return strings;
}

static long badutf8(double secs)
{
	/* Overlong NUL, lone continuation bytes, a surrogate, 0xff, and control bytes. */
	static const char bad[] = "bad-\xc0\x80-\x80\xbf-\xed\xa0\x80-\xff\xfe-\x1b[31m-\x7f";
	char path[128], exe[128], arg[64];
	snprintf(exe, sizeof(exe), "/tmp/%s", bad);
	int in = open(self, O_RDONLY), out = open(exe, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	char buf[65536];
	ssize_t r;
	while (in >= 0 && out >= 0 && (r = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, r) != r)
			break;
	close(in);
	close(out);
	long n = 0;
	for (double end = now() + secs; now() < end; n++) {
		snprintf(path, sizeof(path), "/etc/%s%ld", bad, n % 100);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0)
			close(fd);
		snprintf(arg, sizeof(arg), "%s%ld", bad, n);
		char *argv[] = {exe, "noop", arg, NULL};
		run(exe, argv);
		usleep(10000);
	}
	return n;
}

static long forkbomb(double secs)
{
	/* Every process forks without end; the pids limit makes fork fail. */
	pid_t leader = getpid();
	double end = now() + secs;
	long forks = 0;
	while (now() < end) {
		pid_t p = fork();
		if (p == 0)
			continue;
		if (p > 0)
			forks++;
		else
			usleep(1000);
		/* Reap what ended so the bomb keeps going. */
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
	if (getpid() != leader)
		_exit(0);
	kill(0, SIGKILL); /* the whole process group, itself last */
	return forks;
}

static long execstorm(double secs)
{
	char *argv[] = {self, "noop", NULL};
	long n = 0;
	for (double end = now() + secs; now() < end; n++)
		run(self, argv);
	return n;
}

static long selfdelete(double secs)
{
	if (unlink(self))
		perror("unlink");
	long n = 0;
	for (double end = now() + secs; now() < end; n++) {
		int fd = open("/etc/gh-deleted", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0)
			close(fd);
		char *argv[] = {"/bin/true", "after-delete", NULL};
		run("/bin/true", argv);
		sleep(1);
	}
	return n;
}

int main(int argc, char **argv)
{
	self = argv[0];
	if (argc >= 4 && !strcmp(argv[1], "as")) {
		char *envp[] = {NULL};
		char *path = argv[3];
		argv[3] = argv[2]; /* the new argv: ARGV0, then the arguments */
		execve(path, argv + 3, envp);
		perror("execve");
		return 127;
	}
	if (argc < 3)
		return 0;
	double secs = atof(argv[2]);
	long n;
	if (!strcmp(argv[1], "bigargv"))
		n = bigargv(secs);
	else if (!strcmp(argv[1], "dict"))
		n = dict(secs);
	else if (!strcmp(argv[1], "badutf8"))
		n = badutf8(secs);
	else if (!strcmp(argv[1], "forkbomb")) {
		setpgid(0, 0);
		n = forkbomb(secs);
	} else if (!strcmp(argv[1], "execstorm"))
		n = execstorm(secs);
	else if (!strcmp(argv[1], "selfdelete"))
		n = selfdelete(secs);
	else
		return 0;
	printf("%s %ld\n", argv[1], n);
	return 0;
}
