/* replay_main.c - runs a libFuzzer target over corpus files without libFuzzer (gcc builds), so
 * every corpus file is also a regression test under ctest. Arguments: files or directories. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    if (eg_read_file(path, 16 * 1024 * 1024, &data, &len) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    eg_free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int failures = 0, ran = 0;
    eg_alloc_init();
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "cannot stat %s\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            failures += run_file(argv[i]);
            ran++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char *p = eg_asprintf("%s/%s", argv[i], e->d_name);
            if (!p)
                return 1;
            failures += run_file(p);
            ran++;
            eg_free(p);
        }
        if (d)
            closedir(d);
    }
    if (ran == 0) {
        fprintf(stderr, "empty corpus\n");
        return 1;
    }
    printf("%d inputs replayed\n", ran);
    return failures ? 1 : 0;
}
