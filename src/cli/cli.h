/* The command line: `telehook serve` and the admin commands, built from the server's modules. */
#ifndef TH_CLI_CLI_H
#define TH_CLI_CLI_H

/* Runs the command in argv; returns the process exit status. */
int th_cli_main(int argc, char **argv);

#endif
