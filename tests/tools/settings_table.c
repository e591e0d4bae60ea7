/* Prints the README's settings table from the config module's table (make readme). */
#include <stdio.h>

#include "config/config.h"

int main(void)
{
    cfg_print_settings_table(stdout);
    return 0;
}
