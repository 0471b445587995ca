//! Every `WriteBuffer` operation, in the order and with the arguments the input decodes to,
//! applied to the buffer and to a model; after each one the two must agree on the bytes still to
//! go on the wire, their segmentation, and which pinned values have been released.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: sendbuf_testkit::model::Input| {
    sendbuf_testkit::model::run(&input);
});
