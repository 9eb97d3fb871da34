/*
 * Load generator for the agent benchmark (built with `gcc -static` by the
 * bench, run inside a container):
 *   storm exec N    fork + execve(self) + wait, N times
 *   storm tcp N     on 127.0.0.1: connect, accept, close both ends, N times
 *   storm           (no arguments) exit 0 at once: the exec target
 * Prints the seconds the loop took.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int exec_storm(long n, const char *self)
{
	char *argv[] = {(char *)self, NULL};
	char *envp[] = {NULL};
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			execve(self, argv, envp);
			_exit(127);
		}
		int status;
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "child %ld failed\n", i);
			return 1;
		}
	}
	return 0;
}

static int tcp_storm(long n)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 128) || getsockname(l, (void *)&a, &len)) {
		perror("listen");
		return 1;
	}
	for (long i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (void *)&a, sizeof(a))) {
			perror("connect");
			return 1;
		}
		int s = accept(l, NULL, NULL);
		if (s < 0) {
			perror("accept");
			return 1;
		}
		/* Client closes first: its TIME_WAIT does not pin the server's port. */
		close(c);
		close(s);
	}
	close(l);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 0;
	long n = atol(argv[2]);
	double t0 = now();
	int rc;
	if (!strcmp(argv[1], "exec"))
		rc = exec_storm(n, argv[0]);
	else if (!strcmp(argv[1], "tcp"))
		rc = tcp_storm(n);
	else {
		fprintf(stderr, "usage: storm exec|tcp N\n");
		return 2;
	}
	if (rc == 0)
		printf("%.6f\n", now() - t0);
	return rc;
}
