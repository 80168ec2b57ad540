/* Says which architecture it was compiled for: the cross compiler's target, not the host's. */
#include <stdio.h>

int main(void) {
#if defined(__aarch64__)
    const char *arch = "aarch64";
#elif defined(__x86_64__)
    const char *arch = "x86_64";
#else
    const char *arch = "something else";
#endif
    printf("hello from a program compiled for %s\n", arch);
    return 0;
}
