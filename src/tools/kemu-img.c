/*
 * kemu-img: disk image utility, command-compatible with qemu-img for raw and qcow2 images.
 * Built on the synchronous qcow2 library (block/qcow2.h) and the QemuOpts-style parser
 * (cli/opts.h) for -o.
 *
 * Commands: create, info, check, convert, compare, resize, snapshot, measure, map, commit,
 * rebase.
 * Errors print one line "kemu-img: ..." on stderr; the exit codes are qemu-img's.
 */
#include <string.h>
#include <unistd.h>

#include "kemu-config.h"

#include "tools/img.h"

/* ---- main ---- */

/* as kemu-img --help lists them */
static const struct img_cmd *const img_cmds[] = {
    &img_cmd_check,  &img_cmd_commit, &img_cmd_compare,  &img_cmd_convert,
    &img_cmd_create, &img_cmd_info,   &img_cmd_map,      &img_cmd_measure,
    &img_cmd_rebase, &img_cmd_resize, &img_cmd_snapshot,
};

static void usage(void)
{
    printf("kemu-img version " KEMU_VERSION "\n"
           "usage: kemu-img [standard options] command [command options]\n"
           "QEMU-compatible disk image utility (raw and qcow2)\n\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n\n"
           "Command syntax ('kemu-img COMMAND --help' describes the options):\n");
    for (size_t i = 0; i < sizeof(img_cmds) / sizeof(img_cmds[0]); i++) {
        printf("  ");
        cmd_synopsis(stdout, img_cmds[i]);
    }
    printf("\nSupported formats: raw qcow2\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        err_print("Not enough arguments; try 'kemu-img --help'");
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage();
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("kemu-img version " KEMU_VERSION "\n");
        return 0;
    }
    opterr = 0;
    optind = 1;
    for (size_t i = 0; i < sizeof(img_cmds) / sizeof(img_cmds[0]); i++)
        if (!strcmp(cmd, img_cmds[i]->name))
            return img_cmds[i]->fn(img_cmds[i], argc - 1, argv + 1);
    if (cmd[0] == '-')
        err_print("Unknown option '%s'", cmd);
    else
        err_print("Command not found: %s", cmd);
    return 1;
}
