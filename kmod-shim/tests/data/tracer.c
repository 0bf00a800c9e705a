/* Run a program under ptrace, as a debugger or strace would: the child
 * asks to be traced (PTRACE_TRACEME) and execs PROG; this process resumes
 * it at every stop until it exits, and exits with its status.
 *
 *   tracer PROG ARGS...
 *   tracer -p PID            attach to PID (PTRACE_ATTACH) and detach:
 *                            prints "ATTACHED" (exit 0) or "ERR <errno>"
 *                            (exit 1)
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "-p") && argc > 2) {
        pid_t t = (pid_t)atoi(argv[2]);
        if (ptrace(PTRACE_ATTACH, t, NULL, NULL) != 0) { printf("ERR %d\n", errno); return 1; }
        waitpid(t, NULL, 0);
        ptrace(PTRACE_DETACH, t, NULL, NULL);
        puts("ATTACHED");
        return 0;
    }
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) { perror("ptrace"); _exit(126); }
        execvp(argv[1], argv + 1);
        perror("execvp");
        _exit(127);
    }
    for (;;) {
        int st;
        if (waitpid(pid, &st, 0) < 0) return 2;
        if (WIFEXITED(st)) return WEXITSTATUS(st);
        if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
        if (WIFSTOPPED(st)) {
            int sig = WSTOPSIG(st);
            ptrace(PTRACE_CONT, pid, NULL, (void *)(long)(sig == SIGTRAP ? 0 : sig));
        }
    }
}
