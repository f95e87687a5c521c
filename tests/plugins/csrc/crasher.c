/* A test plugin that counts its calls in a static (state kept from stage to stage, as the
 * header allows) and reports the count, and at the stage named by $PYPM_TEST_CRASH_AT dies:
 * a NULL write (SIGSEGV), or abort() (SIGABRT) when $PYPM_TEST_CRASH_HOW is "abort", or
 * _exit(4) when it is "exit". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pypm_plugin.h"

static int calls;

int pypm_hook(const struct pypm_context *ctx) {
    char msg[64];
    snprintf(msg, sizeof msg, "call %d at %s", ++calls, ctx->stage);
    ctx->report(ctx, msg);
    const char *at = getenv("PYPM_TEST_CRASH_AT"), *how = getenv("PYPM_TEST_CRASH_HOW");
    if (at && strcmp(at, ctx->stage) == 0) {
        if (how && strcmp(how, "abort") == 0)
            abort();
        if (how && strcmp(how, "exit") == 0)
            _exit(4);
        *(volatile int *)(size_t)0 = 1;
    }
    return 0;
}
