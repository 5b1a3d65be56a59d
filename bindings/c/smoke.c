/*
 * A C caller of include/segstore.h, compiled with -Wall -Wextra -pedantic -Werror by
 * scripts/test-bindings.sh and run against a store the CLI built. It prints what the store
 * answers; the script compares that with the expected text.
 *
 * usage: smoke STORE_DIR CONTEXT_HASH
 */
#include "segstore.h"

#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s STORE_DIR CONTEXT_HASH\n", argv[0]);
        return 2;
    }
    segstore_reader *reader = segstore_open_read_only(argv[1]);
    if (!reader) {
        fprintf(stderr, "open: %s\n", segstore_last_error());
        return 1;
    }
    segstore_metadata meta;
    if (segstore_get_metadata(reader, &meta) != SEGSTORE_OK) {
        fprintf(stderr, "metadata: %s\n", segstore_last_error());
        return 1;
    }
    printf("synchronized_on %s %llu\n", meta.has_synchronized_on ? "set" : "none",
           (unsigned long long)meta.synchronized_on);
    segstore_membership *membership = segstore_get_membership(reader, argv[2]);
    if (!membership) {
        fprintf(stderr, "membership: %s\n", segstore_last_error());
        return 1;
    }
    for (size_t i = 0; i < membership->len; i++) {
        printf("%s %s\n", membership->entries[i].segment,
               membership->entries[i].included ? "true" : "false");
    }
    segstore_membership_free(membership);
    printf("check beta.g1 %d\n", segstore_check(reader, "beta.g1", argv[2]));
    if (segstore_check(reader, NULL, argv[2]) != SEGSTORE_ERROR) {
        fprintf(stderr, "a NULL segment was not an error\n");
        return 1;
    }
    printf("error %s\n", segstore_last_error());
    segstore_close(reader);
    return 0;
}
