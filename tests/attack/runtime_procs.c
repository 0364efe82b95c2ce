/* Hostile code inside a container: look for a runtime process (init before its exec, an exec
 * child: any process whose command line still names "berth") and try to get hold of it:
 *   - list /proc/<pid>/fd and open each descriptor (a private procfs would give the host's
 *     /proc/sys: checked by opening sys/kernel/core_pattern for READING only);
 *   - read the descriptor links (host namespaces, sockets, directories);
 *   - PTRACE_SEIZE it (then detach at once);
 *   - pidfd_getfd its descriptors 3..63.
 * A success counts only if the process still names "berth" afterwards (its command line changes
 * at its execve, when it has become the user's program, which the container may trace), and then
 * it is a line "LEAK <kind> pid=<pid> ..." in the output file. Runs until the duration
 * (seconds) is over or the file named by argv[3] exists. Prints "SCANNED <n>" with the number of
 * runtime processes it saw, so the test knows the race was really run.
 * Usage: runtime_procs OUT SECONDS [STOPFILE] */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static FILE *out;
static long seen;
static int seen_pids[4096];
static int nseen;

static int is_runtime(int pid);

static void leak(const char *kind, int pid, const char *what) {
	if (!is_runtime(pid))
		return; /* it had already become the user's program */
	fprintf(out, "LEAK %s pid=%d %s\n", kind, pid, what);
	fflush(out);
}

static int is_runtime(int pid) {
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == 0)
			buf[i] = ' ';
	buf[n] = 0;
	return strstr(buf, "berth") != NULL;
}

static void try_fds(int pid) {
	char path[64], link[4096], what[4300];
	snprintf(path, sizeof path, "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int n = atoi(e->d_name);
		char p[128];
		snprintf(p, sizeof p, "/proc/%d/fd/%d", pid, n);
		ssize_t l = readlink(p, link, sizeof link - 1);
		if (l >= 0) {
			link[l] = 0;
			if (n >= 3) {
				snprintf(what, sizeof what, "fd=%d -> %s", n, link);
				leak("FD", pid, what);
			}
		}
		int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0) {
			int cp = openat(fd, "sys/kernel/core_pattern", O_RDONLY | O_CLOEXEC);
			if (cp >= 0) {
				snprintf(what, sizeof what, "fd=%d is a procfs with the host's sysctls", n);
				leak("PROCFS", pid, what);
				close(cp);
			}
			close(fd);
		}
	}
	closedir(d);
}

static void try_ptrace(int pid) {
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0)
		return;
	/* Stop it, so that its command line is stable while it is looked at, then let it go. */
	if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0) {
		int st;
		if (waitpid(pid, &st, __WALL) == pid && WIFSTOPPED(st))
			leak("PTRACE", pid, "seized");
	}
	ptrace(PTRACE_DETACH, pid, 0, 0);
}

static void try_getfd(int pid) {
	int pfd = syscall(SYS_pidfd_open, pid, 0);
	if (pfd < 0)
		return;
	for (int n = 3; n < 64; n++) {
		int fd = syscall(SYS_pidfd_getfd, pfd, n, 0);
		if (fd >= 0) {
			char what[64];
			snprintf(what, sizeof what, "fd=%d", n);
			leak("GETFD", pid, what);
			close(fd);
		}
	}
	close(pfd);
}

static void note_seen(int pid) {
	for (int i = 0; i < nseen; i++)
		if (seen_pids[i] == pid)
			return;
	if (nseen < 4096)
		seen_pids[nseen++] = pid;
	seen++;
	fprintf(out, "SEEN %d\n", pid);
	fflush(out);
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: %s OUT SECONDS [STOPFILE]\n", argv[0]);
		return 2;
	}
	out = fopen(argv[1], "w");
	if (!out)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	time_t end = time(NULL) + atoi(argv[2]);
	int self = getpid();
	fprintf(out, "READY\n");
	fflush(out);
	while (time(NULL) < end) {
		if (argc > 3 && access(argv[3], F_OK) == 0)
			break;
		DIR *proc = opendir("/proc");
		if (!proc)
			return 2;
		struct dirent *e;
		while ((e = readdir(proc))) {
			int pid = atoi(e->d_name);
			if (pid <= 0 || pid == self || !is_runtime(pid))
				continue;
			note_seen(pid);
			try_fds(pid);
			try_ptrace(pid);
			try_getfd(pid);
		}
		closedir(proc);
	}
	fprintf(out, "SCANNED %ld\n", seen);
	fclose(out);
	return 0;
}
