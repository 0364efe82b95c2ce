/* A hostile, fully privileged workload in a VM container's guest (tests/vm.rs, issue 19): all
 * capabilities, no seccomp, no pid namespace, every device allowed. It takes the guest agent's
 * descriptors (pidfd_getfd on PID 1) to speak on the host's ports itself, stops the agent, floods
 * the console, the exit port and exec streams, breaks the frame protocol, and tries to leave
 * device nodes, set-user-ID programs and security xattrs in the rootfs shared with the host.
 *
 *   vm_guest stop-agent            PTRACE_SEIZE + PTRACE_INTERRUPT the agent, hold it stopped
 *   vm_guest flood-console MIB     write MIB MiB to the kernel console (hvc0)
 *   vm_guest flood-exit MIB        "exit 42\n" then MIB MiB on the exit port
 *   vm_guest flood-streams MIB FIRST LAST [bad-frame]
 *                                  stop the agent, then MIB MiB of stdout frames on streams
 *                                  FIRST-LAST, ignoring every window; then a broken frame
 *   vm_guest plant DIR             mknod, setuid, security/trusted xattrs under DIR
 *
 * Prints one line per step ("<step>: ok" or "<step>: <errno text>").
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

static void say(const char *step, int rc) {
    if (rc < 0)
        printf("%s: %s\n", step, strerror(errno));
    else
        printf("%s: ok\n", step);
    fflush(stdout);
}

/* The agent's descriptor of the virtio port named `name`, taken with pidfd_getfd. */
static int agent_port(const char *name) {
    char dev[256] = "";
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[512], n[64] = "";
        snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        if (fgets(n, sizeof n, f))
            n[strcspn(n, "\n")] = 0;
        fclose(f);
        if (strcmp(n, name) == 0)
            snprintf(dev, sizeof dev, "%s", e->d_name);
    }
    if (d)
        closedir(d);
    if (!dev[0]) {
        fprintf(stderr, "port %s not found\n", name);
        exit(2);
    }
    int pidfd = syscall(SYS_pidfd_open, 1, 0);
    if (pidfd < 0) {
        perror("pidfd_open 1");
        exit(2);
    }
    d = opendir("/proc/1/fd");
    while (d && (e = readdir(d))) {
        char p[512], target[512];
        snprintf(p, sizeof p, "/proc/1/fd/%s", e->d_name);
        ssize_t n = readlink(p, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = 0;
        size_t tl = strlen(target), dl = strlen(dev);
        if (tl >= dl && strcmp(target + tl - dl, dev) == 0) {
            int fd = syscall(SYS_pidfd_getfd, pidfd, atoi(e->d_name), 0);
            if (fd >= 0)
                return fd;
            perror("pidfd_getfd");
        }
    }
    fprintf(stderr, "the agent holds no descriptor of %s\n", dev);
    exit(2);
}

static void stop_agent(void) {
    if (ptrace(PTRACE_SEIZE, 1, 0, 0) < 0 || ptrace(PTRACE_INTERRUPT, 1, 0, 0) < 0) {
        say("stop-agent", -1);
        exit(1);
    }
    int st;
    waitpid(1, &st, __WALL);
    say("stop-agent", 0);
}

static void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= n;
    }
}

static void frame_header(unsigned char *h, uint32_t stream, char kind, uint32_t len) {
    memcpy(h, &stream, 4);
    h[4] = kind;
    memcpy(h + 5, &len, 4);
}

static void flood(int fd, long mib, const char *first) {
    static char junk[32768];
    memset(junk, 'j', sizeof junk);
    if (first)
        write_all(fd, first, strlen(first));
    for (long i = 0; i < mib * 32; i++)
        write_all(fd, junk, sizeof junk);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    long mib = argc > 2 ? atol(argv[2]) : 0;
    if (!strcmp(mode, "stop-agent")) {
        stop_agent();
        for (;;)
            pause();
    }
    if (!strcmp(mode, "flood-console")) {
        mknod("/dev/hvc0", S_IFCHR | 0600, makedev(229, 0));
        int fd = open("/dev/hvc0", O_WRONLY | O_NOCTTY);
        say("open hvc0", fd);
        if (fd < 0)
            return 1;
        flood(fd, mib, NULL);
        say("flood-console", 0);
        return 0;
    }
    if (!strcmp(mode, "flood-exit")) {
        int fd = agent_port("berth.exit");
        flood(fd, mib, "exit 42\n");
        say("flood-exit", 0);
        return 0;
    }
    if (!strcmp(mode, "flood-streams") && argc > 4) {
        int fd = agent_port("berth.ctl");
        uint32_t first = atoi(argv[3]), last = atoi(argv[4]);
        stop_agent();
        static unsigned char buf[32768];
        uint32_t len = sizeof buf - 9;
        memset(buf + 9, 'o', len);
        long frames = mib * 1024 * 1024 / len;
        for (long i = 0; i < frames; i++) {
            frame_header(buf, first + i % (last - first + 1), 'O', len);
            write_all(fd, buf, sizeof buf);
        }
        say("flood-streams", 0);
        if (argc > 5 && !strcmp(argv[5], "bad-frame")) {
            sleep(2);
            unsigned char h[9];
            frame_header(h, 0, 'O', 0xfffffff0u);
            write_all(fd, h, sizeof h);
            say("bad-frame", 0);
            flood(fd, 16, NULL);
            say("junk", 0);
        }
        for (;;)
            pause();
    }
    if (!strcmp(mode, "plant") && argc > 2) {
        if (chdir(argv[2]) < 0)
            return 2;
        say("mknod char 1:1", mknod("planted-mem", S_IFCHR | 0666, makedev(1, 1)));
        say("mknod block 8:0", mknod("planted-disk", S_IFBLK | 0666, makedev(8, 0)));
        int fd = open("planted-suid", O_WRONLY | O_CREAT | O_TRUNC, 0755);
        write_all(fd, "#!/bin/sh\nid\n", 13);
        close(fd);
        say("chmod u+s", chmod("planted-suid", 04755));
        say("chmod g+s", chmod("planted-suid", 02755));
        fd = open("planted-created-suid", O_WRONLY | O_CREAT | O_EXCL, 04755);
        say("create with u+s", fd);
        if (fd >= 0)
            close(fd);
        say("mknod regular u+s", mknod("planted-mknod-suid", S_IFREG | 04755, 0));
        /* struct vfs_cap_data v2: every capability permitted and effective. */
        uint32_t cap[5] = {0x02000001u, 0xffffffffu, 0, 0xffffffffu, 0};
        say("setxattr security.capability", setxattr("planted-suid", "security.capability", cap, sizeof cap, 0));
        say("setxattr trusted.overlay.opaque", setxattr("planted-suid", "trusted.overlay.opaque", "y", 1, 0));
        say("setxattr user.virtiofs.security.capability",
            setxattr("planted-suid", "user.virtiofs.security.capability", cap, sizeof cap, 0));
        char back[64];
        say("getxattr security.capability (guest view)",
            (int)getxattr("planted-suid", "security.capability", back, sizeof back));
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
