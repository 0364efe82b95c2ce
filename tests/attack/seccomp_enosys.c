/* Prints the errno of a syscall newer than the profile (clone3) and of one no kernel has (1000):
 * under a profile that does not name them, both must fail with ENOSYS (38), as under runc, so that
 * the C library falls back (clone3 -> clone) instead of taking the profile's EPERM as final. */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    long r1 = syscall(435 /* clone3 */, NULL, 0);
    int e1 = errno;
    long r2 = syscall(1000);
    int e2 = errno;
    printf("clone3=%ld/%d nr1000=%ld/%d\n", r1, e1, r2, e2);
    return 0;
}
