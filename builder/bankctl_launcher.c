/* bankctl's launcher, in the kit (/run/bankboot/kit/bin/bankctl; /run/bankboot/bin/bankctl links to it).
 *
 * It runs the kit's frozen program as bankctl, through the kit's own ld.so and libraries, so it works in
 * any image whatever its libc (or none):
 *
 *     KIT LDSO  KIT/init  ARGS...     with LD_LIBRARY_PATH=LIBPATH and BANKBOOT_ENTRY=bankctl
 *
 * The caller's other LD_* variables are dropped: the kit's ld.so must load the kit's libraries only.
 *
 * Freestanding (no libc, no shell): a sealed initramfs carries no shell, not even for this, and a program
 * that can only exec one fixed path cannot be turned into one (as rdinit= it finds no kit and exits).
 * builder/launcher.py compiles it per architecture with KIT, LDSO and LIBPATH given as -D strings. */

#if !defined(KIT) || !defined(LDSO) || !defined(LIBPATH)
#error "KIT, LDSO and LIBPATH must be defined"
#endif

#if defined(__x86_64__)
#define NR_WRITE 1
#define NR_EXECVE 59
#define NR_EXIT 60
static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}
__asm__(".text\n.global _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");
#elif defined(__aarch64__)
#define NR_WRITE 64
#define NR_EXECVE 221
#define NR_EXIT 93
static long sys3(long n, long a, long b, long c) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n mov x0, sp\n bl start_c\n");
#elif defined(__arm__)
#define NR_WRITE 4
#define NR_EXECVE 11
#define NR_EXIT 1
static long sys3(long n, long a, long b, long c) {
    register long r7 __asm__("r7") = n;
    register long r0 __asm__("r0") = a;
    register long r1 __asm__("r1") = b;
    register long r2 __asm__("r2") = c;
    __asm__ volatile("svc #0" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2) : "memory");
    return r0;
}
__asm__(".text\n.global _start\n_start:\n mov r0, sp\n bl start_c\n");
#else
#error "an architecture bankboot does not know"
#endif

static const char interp[] = KIT LDSO;
static const char program[] = KIT "/init";
static const char libpath[] = "LD_LIBRARY_PATH=" LIBPATH;
static const char entry[] = "BANKBOOT_ENTRY=bankctl";
static const char failed[] = "bankctl: cannot run " KIT LDSO " (is this the booted image of a bankboot device?)\n";

static int dropped(const char *var) {
    static const char bb[] = "BANKBOOT_ENTRY=";
    int i;
    if (var[0] == 'L' && var[1] == 'D' && var[2] == '_')
        return 1;
    for (i = 0; bb[i]; i++)
        if (var[i] != bb[i])
            return 0;
    return 1;
}

__attribute__((noreturn, used)) void start_c(long *sp) {
    long argc = sp[0], envc = 0, i, k = 2, n = 0;
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    while (envp[envc])
        envc++;
    {
        char *args[argc + 3];
        char *env[envc + 3];
        args[0] = (char *)interp;
        args[1] = (char *)program;
        for (i = 1; i < argc; i++)
            args[k++] = argv[i];
        args[k] = 0;
        for (i = 0; i < envc; i++)
            if (!dropped(envp[i]))
                env[n++] = envp[i];
        env[n++] = (char *)libpath;
        env[n++] = (char *)entry;
        env[n] = 0;
        sys3(NR_EXECVE, (long)interp, (long)args, (long)env);
    }
    sys3(NR_WRITE, 2, (long)failed, sizeof failed - 1);
    for (;;)
        sys3(NR_EXIT, 127, 0, 0);
}
