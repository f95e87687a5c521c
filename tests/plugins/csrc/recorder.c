/* A test plugin: appends every call's context to $PYPM_TEST_LOG, one line per field,
 * and fails (reporting why) at the stage named by $PYPM_TEST_FAIL_AT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pypm_plugin.h"

#ifndef STAGES
#define STAGES PYPM_STAGE_ALL
#endif
PYPM_PLUGIN_DECLARE(STAGES);

static const char *s(const char *p) { return p ? p : "(null)"; }

int pypm_hook(const struct pypm_context *ctx) {
    const char *log = getenv("PYPM_TEST_LOG");
    if (log) {
        FILE *f = fopen(log, "a");
        if (!f) return 2;
        fprintf(f, "stage=%s\n", s(ctx->stage));
        fprintf(f, "abi=%u stage_id=%u\n", ctx->abi_version, ctx->stage_id);
        fprintf(f, "plugin=%s\n", s(ctx->plugin_name));
        fprintf(f, "root=%s\n", s(ctx->project_root));
        fprintf(f, "venv=%s\n", s(ctx->venv));
        fprintf(f, "lock=%s\n", s(ctx->lock_path));
        fprintf(f, "interpreter=%s\n", s(ctx->interpreter));
        fprintf(f, "config=%s\n", s(ctx->config_json));
        fprintf(f, "n_packages=%zu\n", ctx->n_packages);
        for (size_t i = 0; i < ctx->n_packages; i++)
            fprintf(f, "package=%s %s %s %s\n", s(ctx->packages[i].name), s(ctx->packages[i].version),
                    s(ctx->packages[i].sha256), s(ctx->packages[i].wheel_path));
        fprintf(f, "end\n");
        fclose(f);
    }
    const char *fail = getenv("PYPM_TEST_FAIL_AT");
    if (fail && ctx->stage && strcmp(fail, ctx->stage) == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "refusing %s of %zu packages", ctx->stage, ctx->n_packages);
        ctx->report(ctx, msg);
        return 3;
    }
    ctx->report(ctx, "hello from C");
    return 0;
}
