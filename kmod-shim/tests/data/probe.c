/* A tiny process for policy tests: its path (and copies of it) are what
 * process-set rules match. It reads a file one way and writes the bytes it
 * got to stdout, or "ERR <errno>" and exit status 1.
 *
 *   probe read FILE          read(2) the whole file
 *   probe mmap FILE          map it (shared, else private) and copy it out
 *   probe stat FILE          print st_size
 *   probe hold FILE SECS     mmap and print, then keep the mapping SECS
 *   probe hold2 FILE SECS    mmap and print, keep the mapping SECS, then
 *                            print "--AGAIN--" and the mapping once more
 *   probe reread FILE SECS   read, print, sleep SECS, read again from the
 *                            same fd: prints "AGAIN OK" or "AGAIN ERR n"
 *   probe keep FILE TRIGGER  open, map and print the mapping; wait until
 *                            TRIGGER exists (at most 60 s); then through
 *                            the same fd print "--READ--" and what pread
 *                            gives (or "ERR n"), "--FSTAT--" and "OK" or
 *                            "ERR n", and last "--MAP--" and the mapping
 *                            (a refused fault is SIGBUS)
 *   probe append FILE DATA   the append-only attack: open O_WRONLY|O_APPEND
 *                            and write DATA, then clear O_APPEND with fcntl
 *                            and try pwrite at 0, fallocate (punch, zero,
 *                            collapse, insert, grow), ftruncate, an
 *                            O_APPEND|O_TRUNC open, and last a pwrite at
 *                            the end; one "NAME OK" or "NAME ERR n" line
 *                            each
 *   probe after FILE TRIGGER wait until TRIGGER exists (at most 60 s),
 *                            then as `read` (the open comes after the wait)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(void) { printf("ERR %d\n", errno); return 1; }

static void report(const char *what, int r) {
    if (r < 0) printf("%s ERR %d\n", what, errno);
    else printf("%s OK\n", what);
}

static int append_attack(const char *file, const char *data) {
    size_t len = strlen(data);
    int fd = open(file, O_WRONLY | O_APPEND);
    if (fd < 0) return fail();
    report("APPEND", write(fd, data, len) == (ssize_t)len ? 0 : -1);
    int fl = fcntl(fd, F_GETFL);
    report("CLEAR", fcntl(fd, F_SETFL, fl & ~O_APPEND));
    report("PWRITE0", pwrite(fd, data, len, 0) == (ssize_t)len ? 0 : -1);
    report("PUNCH", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1));
    report("ZERO", fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 1));
    report("COLLAPSE", fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096));
    report("INSERT", fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, 4096));
    report("GROW", fallocate(fd, 0, 0, 1 << 20));
    report("TRUNC", ftruncate(fd, 0));
    int t = open(file, O_WRONLY | O_APPEND | O_TRUNC);
    report("OTRUNC", t);
    if (t >= 0) close(t);
    struct stat st;
    if (fstat(fd, &st) < 0) return fail();
    report("END", pwrite(fd, data, len, st.st_size) == (ssize_t)len ? 0 : -1);
    close(fd);
    return 0;
}

static ssize_t read_all(int fd, unsigned char *buf, size_t n) {
    size_t t = 0;
    while (t < n) {
        ssize_t r = pread(fd, buf + t, n - t, (off_t)t);
        if (r < 0) return -1;
        if (r == 0) break;
        t += (size_t)r;
    }
    return (ssize_t)t;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (!strcmp(argv[1], "append") && argc > 3) return append_attack(argv[2], argv[3]);
    if (!strcmp(argv[1], "after") && argc > 3) {
        for (int i = 0; i < 600 && access(argv[3], F_OK) != 0; i++) usleep(100000);
        argv[1] = "read";
    }
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return fail();
    struct stat st;
    if (fstat(fd, &st) < 0) return fail();
    size_t n = (size_t)st.st_size;
    if (!strcmp(argv[1], "keep") && argc > 3) {
        if (n == 0) return 2;
        unsigned char *m = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) return fail();
        fwrite(m, 1, n, stdout);
        fflush(stdout);
        for (int i = 0; i < 600 && access(argv[3], F_OK) != 0; i++) usleep(100000);
        unsigned char *buf = malloc(n);
        fputs("--READ--", stdout);
        ssize_t got = read_all(fd, buf, n);
        if (got < 0) printf("ERR %d", errno);
        else fwrite(buf, 1, (size_t)got, stdout);
        fputs("--FSTAT--", stdout);
        if (fstat(fd, &st) < 0) printf("ERR %d", errno);
        else fputs("OK", stdout);
        fputs("--MAP--", stdout);
        fflush(stdout);
        /* Touch the mapping here, not inside write(2) (EFAULT there). */
        for (size_t i = 0; i < n; i++) buf[i] = ((volatile unsigned char *)m)[i];
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "stat")) { printf("%lld\n", (long long)st.st_size); return 0; }
    if (!strcmp(argv[1], "mmap") || !strcmp(argv[1], "hold") || !strcmp(argv[1], "hold2")) {
        if (n == 0) return 0;
        unsigned char *m = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) return fail();
        fwrite(m, 1, n, stdout);
        fflush(stdout);
        if (!strcmp(argv[1], "hold") && argc > 3) sleep((unsigned)atoi(argv[3]));
        if (!strcmp(argv[1], "hold2") && argc > 3) {
            sleep((unsigned)atoi(argv[3]));
            fputs("--AGAIN--", stdout);
            fflush(stdout);
            fwrite(m, 1, n, stdout);
            fflush(stdout);
        }
        return 0;
    }
    unsigned char *buf = malloc(n + 1);
    ssize_t got = read_all(fd, buf, n);
    if (got < 0) return fail();
    fwrite(buf, 1, (size_t)got, stdout);
    if (!strcmp(argv[1], "reread") && argc > 3) {
        fflush(stdout);
        sleep((unsigned)atoi(argv[3]));
        if (read_all(fd, buf, n) < 0) printf("AGAIN ERR %d\n", errno);
        else printf("AGAIN OK\n");
    }
    return 0;
}
