/*
 * segstore.h: the C ABI of segstore, a read-only handle on a big-segment store.
 *
 * Link with libsegstore (`cargo build` makes target/{debug,release}/libsegstore.so).
 * Kept in step with src/ffi.rs by tests/ffi_header.rs.
 *
 * Conventions every function follows:
 *  - Strings in are NUL-terminated UTF-8. A NULL or non-UTF-8 argument is an error, and so is
 *    an invalid key (empty or longer than 4096 bytes).
 *  - A function that fails returns NULL or SEGSTORE_ERROR and leaves a message that
 *    segstore_last_error() returns on the same thread. Every call (other than
 *    segstore_last_error itself) clears the previous message first.
 *  - No panic crosses the boundary: each entry point reports one as an error.
 *  - A handle may be used from any number of threads at once. It must not be used after
 *    segstore_close(), and must be closed exactly once.
 *
 * Example:
 *
 *     segstore_reader *r = segstore_open_read_only("/var/lib/segstore");
 *     if (!r) { fprintf(stderr, "%s\n", segstore_last_error()); return 1; }
 *     segstore_membership *m =
 *         segstore_get_membership(r, "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=");
 *     for (size_t i = 0; m && i < m->len; i++)
 *         printf("%s %s\n", m->entries[i].segment, m->entries[i].included ? "true" : "false");
 *     segstore_membership_free(m);
 *     segstore_close(r);
 */
#ifndef SEGSTORE_H
#define SEGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Returned by a function that succeeded. */
#define SEGSTORE_OK 0
/* Returned by a function that failed; segstore_last_error() says why. */
#define SEGSTORE_ERROR -1
/* segstore_check(): neither list of the segment holds the key, or there is no such segment. */
#define SEGSTORE_UNKNOWN 0
/* segstore_check(): the key is in the segment's included list. */
#define SEGSTORE_INCLUDED 1
/* segstore_check(): the key is in the segment's excluded list only. */
#define SEGSTORE_EXCLUDED 2
/*
 * segstore_open_read_only_flags(): open without reading every table whole; check each 16 KiB
 * block against its sum the first time a lookup reads it. A large store then opens in
 * milliseconds; a lookup that reads a damaged block fails (SEGSTORE_ERROR / NULL) instead of
 * the open.
 */
#define SEGSTORE_OPEN_VERIFY_ON_READ 1

/* An open read-only handle. It follows the writer with a background poll every 50 ms. */
typedef struct segstore_reader segstore_reader;

/* The sync metadata, as segstore_get_metadata() fills it in. */
typedef struct segstore_metadata {
    /* False if the store was never synced (which counts as stale). */
    bool has_synchronized_on;
    /* Unix ms of the last successful sync; 0 when has_synchronized_on is false. */
    uint64_t synchronized_on;
} segstore_metadata;

/* One segment that mentions the key. */
typedef struct segstore_membership_entry {
    /* The segment ref, NUL-terminated UTF-8, owned by the membership that holds the entry. */
    const char *segment;
    /* True if the key is included (included beats excluded); false if excluded only. */
    bool included;
} segstore_membership_entry;

/* The segments that mention one key, in ref order. Free it with segstore_membership_free(). */
typedef struct segstore_membership {
    /* Number of entries (0 for a key no segment mentions). */
    size_t len;
    /* len entries; NULL when len is 0. */
    const segstore_membership_entry *entries;
} segstore_membership;

/*
 * Opens the store in directory dir read-only. The handle follows the writer (another process,
 * typically) with a background poll every 50 ms. Returns NULL on failure (no store there,
 * unreadable or corrupt files, NULL or non-UTF-8 dir).
 */
segstore_reader *segstore_open_read_only(const char *dir);

/*
 * As segstore_open_read_only(), with flags: 0, or SEGSTORE_OPEN_VERIFY_ON_READ. Returns NULL
 * for any other bit.
 */
segstore_reader *segstore_open_read_only_flags(const char *dir, uint32_t flags);

/* Closes a handle (stopping its poll thread) and frees it. NULL is ignored. */
void segstore_close(segstore_reader *reader);

/*
 * Fills in *out with the sync metadata. Returns SEGSTORE_OK, or SEGSTORE_ERROR for a NULL
 * argument or when the handle's last attempt to follow the writer failed (it then serves its
 * last good state, which may be out of date; the error clears once following succeeds again).
 */
int32_t segstore_get_metadata(const segstore_reader *reader, segstore_metadata *out);

/*
 * The segments that mention context_hash (the key as LaunchDarkly SDKs query: the
 * 44-character base64 context hash), each with included (true) or excluded-only (false).
 * A key no segment mentions gives an empty membership (len 0), not an error. Returns NULL on
 * failure. Free the result with segstore_membership_free(); it does not depend on the handle
 * and may outlive it.
 */
segstore_membership *segstore_get_membership(const segstore_reader *reader,
                                             const char *context_hash);

/* Frees a membership from segstore_get_membership(). NULL is ignored. */
void segstore_membership_free(segstore_membership *membership);

/*
 * Answers "is key in segment?": SEGSTORE_INCLUDED (included beats excluded),
 * SEGSTORE_EXCLUDED, SEGSTORE_UNKNOWN (neither list, or no such segment), or SEGSTORE_ERROR.
 */
int32_t segstore_check(const segstore_reader *reader, const char *segment, const char *key);

/*
 * The message of the last failed call on this thread, or NULL if the last call succeeded.
 * The text stays valid until the next segstore call on this thread; copy it to keep it.
 */
const char *segstore_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SEGSTORE_H */
