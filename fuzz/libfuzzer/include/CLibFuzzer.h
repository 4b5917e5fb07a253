// libFuzzer's driver, for fuzz targets whose `main` SwiftPM names itself (see fuzz/replay/Replay.swift).
// Declared only: it is linked from libFuzzer when a target is built with -sanitize=fuzzer.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
