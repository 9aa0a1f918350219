/*
 * The kemu command line (QEMU-compatible subset). One table in cmdline.c describes every
 * option (name, argument, option group, handler, help); parsing, -help output and errors all
 * come from it. To add an option (-drive, -netdev, -object): write a handler and one row,
 * with an opts_group if its argument is "key=value,...".
 */
#ifndef KEMU_CLI_CMDLINE_H
#define KEMU_CLI_CMDLINE_H

#include <stdio.h>

#include "cli/config.h"
#include "core/error.h"

/*
 * Parse argv[1..argc-1] into cfg (which is overwritten; free it with kemu_config_free() in
 * every case). Returns 0, or -1 with err holding one line such as
 * "-smp 2,socket=2: unknown parameter 'socket' (did you mean 'sockets'?)"; the caller prints
 * "kemu: " + err->msg. A "help" request or -version/-h stops parsing and sets cfg->action.
 */
int cmdline_parse(int argc, char **argv, struct kemu_config *cfg, struct error *err);
void kemu_config_free(struct kemu_config *cfg);

/* Output for the non-RUN actions (the only printing in the cli code). */
void cmdline_print_version(FILE *f);
void cmdline_print_usage(FILE *f);
void cmdline_print_option_help(const struct kemu_config *cfg, FILE *f);
/*
 * Dispatch on cfg->action: print the version, usage or option help and return the exit status
 * for it (0), or return -1 without printing for KEMU_ACTION_RUN.
 */
int cmdline_print_action(const struct kemu_config *cfg, FILE *f);

#endif
