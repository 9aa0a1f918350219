/*
 * libFuzzer harness for the -drive option parser: the input is one -drive argument (up to the
 * first NUL or newline), given to drive_parse() with an index taken from its length. drive_parse
 * only parses (it never opens the file), so any input is safe. A failure must leave a one-line
 * message and nothing allocated; a success must give a consistent drive_opts.
 */
#include <stdlib.h>
#include <string.h>

#include "block/drive.h"
#include "fuzz_option.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_option_text(data, size);
    if (!text)
        return 0;
    struct drive_opts d;
    struct error err = {0};
    int r = drive_parse(text, (unsigned)(size % 8), &d, &err);
    if (r < 0) {
        fuzz_check_error(&err);
    } else if (r == 0) {
        /* every parsed drive has a name and a file the caller can open */
        if (!d.id || !d.file)
            abort();
        (void)strlen(d.id);
        (void)strlen(d.file);
        if (d.serial)
            (void)strlen(d.serial);
        if (d.format)
            (void)strlen(d.format);
        /* bus= and unit= are bounded; renumbering keeps a name (a generated one follows). */
        if (d.index > 65535 || d.bus > 65535)
            abort();
        if (drive_set_unit(&d, (unsigned)size, &err) == 0 && (!d.id || !d.id[0]))
            abort();
        drive_opts_free(&d);
    }
    free(text);
    return 0;
}
