#include <stdio.h>
#include <sys/utsname.h>

int main(void) {
    struct utsname u;
    uname(&u);
    printf("hello from C, compiled in a debian:bookworm stage, running on %s %s\n", u.sysname, u.release);
    return 0;
}
