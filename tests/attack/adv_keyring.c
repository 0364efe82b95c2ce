/* Attack program: look for a key of the runtime's session keyring from inside the container.
 * argv[1] is the key's description. Prints "found <payload>" or "absent <errno>". */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11
#define KEY_SPEC_SESSION_KEYRING -3

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    long key = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", argv[1], 0);
    if (key < 0) {
        printf("absent %d\n", errno);
        return 0;
    }
    char buf[256];
    memset(buf, 0, sizeof buf);
    long n = syscall(SYS_keyctl, KEYCTL_READ, key, buf, sizeof buf - 1);
    printf("found %s\n", n >= 0 ? buf : "(unreadable)");
    return 0;
}
