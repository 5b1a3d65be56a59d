#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| segstore::fuzzing::redis_session(data));
