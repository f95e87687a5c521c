/*
 * pypm_plugin.h - the native plugin ABI of pypm.
 *
 * This header is the only definition of the structures below; pypm's ctypes mirror
 * (pypm/plugins/native.py) is checked against it by a test that compiles a plugin.
 *
 * A native plugin is a shared object named pypm_<name>.so, found on the project's
 * `[tool.pypm] plugin-path` and enabled by `[tool.pypm] plugins = ["<name>"]`.
 * It exports one function:
 *
 *     int pypm_hook(const struct pypm_context *ctx);
 *
 * called once per life-cycle stage. Return 0 to go on; any other value aborts the
 * pypm command with "plugin <name> failed at <stage>: ..." (exit code 9), using the
 * last message the plugin reported as the reason. Everything ctx points to belongs
 * to pypm and is valid only during the call: copy what you want to keep.
 *
 * pypm runs the plugin in a process of its own, one per pypm command: statics keep
 * their values from stage to stage of one command, and a crash in the hook ends only
 * that process (pypm reports "plugin <name> crashed at <stage>", exit code 9).
 *
 * Optionally, declare the ABI version you were built against and the stages you
 * implement (pypm then calls you only at those, and `pypm plugins` lists them):
 *
 *     PYPM_PLUGIN_DECLARE(PYPM_STAGE_PRE_SYNC | PYPM_STAGE_POST_SYNC);
 *
 * Build:  cc -shared -fPIC -I"$(pypm include-dir)" -o pypm_myplugin.so myplugin.c
 */
#ifndef PYPM_PLUGIN_H
#define PYPM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to the structures below. */
#define PYPM_PLUGIN_ABI_VERSION 1

/* Stages, as bits (for PYPM_PLUGIN_DECLARE) and as ctx->stage_id values (the bit). */
enum pypm_stage {
    PYPM_STAGE_PRE_LOCK   = 1u << 0,
    PYPM_STAGE_POST_LOCK  = 1u << 1,
    PYPM_STAGE_PRE_SYNC   = 1u << 2,
    PYPM_STAGE_POST_SYNC  = 1u << 3,
    PYPM_STAGE_PRE_BUILD  = 1u << 4,
    PYPM_STAGE_POST_BUILD = 1u << 5,
    PYPM_STAGE_PRE_RUN    = 1u << 6,
    PYPM_STAGE_POST_RUN   = 1u << 7,
    PYPM_STAGE_ALL        = 0xffu
};

/* One package of the plan. */
struct pypm_package {
    const char *name;        /* canonical name, e.g. "charset-normalizer" */
    const char *version;     /* e.g. "2.32.3" */
    const char *wheel_path;  /* the verified wheel in pypm's cache, or NULL when not known */
    const char *sha256;      /* hex digest of the locked file */
};

struct pypm_context;

/* Print a message to the user, prefixed with the plugin's name. The last message
 * reported before a non-zero return becomes the reason in pypm's error. */
typedef void (*pypm_report_fn)(const struct pypm_context *ctx, const char *message);

struct pypm_context {
    uint32_t abi_version;        /* always first: PYPM_PLUGIN_ABI_VERSION of the running pypm */
    uint32_t stage_id;           /* one enum pypm_stage bit */
    const char *stage;           /* "pre-lock", "post-lock", "pre-sync", "post-sync",
                                    "pre-build", "post-build", "pre-run", "post-run" */
    const char *plugin_name;     /* the name the project enabled this plugin by */
    const char *project_root;    /* absolute path of the directory holding pyproject.toml */
    const char *venv;            /* absolute path of the project's venv, or NULL */
    const char *lock_path;       /* absolute path of pypm.lock, or NULL */
    const char *interpreter;     /* absolute path of the target interpreter, or NULL */
    const char *config_json;     /* the [tool.pypm.<name>] table as JSON ("{}" when absent) */
    const struct pypm_package *packages;  /* the packages of the plan ... */
    size_t n_packages;                    /* ... and how many */
    pypm_report_fn report;       /* ctx->report(ctx, "message") */
};

/* Declare, in one line, the ABI version built against and the stages implemented. */
#define PYPM_PLUGIN_DECLARE(stages)                                   \
    const uint32_t pypm_plugin_abi = PYPM_PLUGIN_ABI_VERSION;        \
    const uint32_t pypm_plugin_stages = (stages)

/* Exported even under -fvisibility=hidden. */
#define PYPM_EXPORT __attribute__((visibility("default")))

PYPM_EXPORT int pypm_hook(const struct pypm_context *ctx);

/* Optional exports, defined by PYPM_PLUGIN_DECLARE; declared here so that they have external
 * linkage in C++ too (a namespace-scope const would otherwise be internal, i.e. not exported). */
PYPM_EXPORT extern const uint32_t pypm_plugin_abi;
PYPM_EXPORT extern const uint32_t pypm_plugin_stages;

#ifdef __cplusplus
}
#endif

#endif /* PYPM_PLUGIN_H */
