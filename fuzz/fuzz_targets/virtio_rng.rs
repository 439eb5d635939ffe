//! virtio-rng: entropy requests (chains of device-writable buffers) as the guest lays them
//! out, served by the device's `process_queue` as its worker does on a notification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::FakeGuest;
use rkt_fuzz::Unstructured;
use vmm::devices::virtio::rng::process_queue;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut guest = FakeGuest::new(1);
    let mut queue = guest.queue(0);
    // Two notifications, so that a second pass starts where the first one stopped.
    for _ in 0..2 {
        let _ = guest.add_chains(&mut u, 0, 8);
        process_queue(&mut queue, &guest.memory);
        guest.check_used(0);
    }
});
