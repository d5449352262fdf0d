#include "cli/cli.h"

int main(int argc, char **argv)
{
    return th_cli_main(argc, argv);
}
