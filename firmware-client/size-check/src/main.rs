//! Size probe: the smallest firmware that connects, subscribes, publishes at
//! QoS 1 and polls for the acknowledgements. The transport replays a canned
//! broker conversation from flash, so the image links every code path a real
//! device uses without a network stack. Build with `cargo build --release`
//! and measure with `llvm-size`.

#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use embedded_io::{ErrorKind, ErrorType, Read, Write};
use tern_client::{Buffers, Client, ConfigBuilder, Event, QoS};

/// CONNACK, SUBACK (id 1, QoS 1 granted), PUBACK (id 2): the broker's side.
static BROKER: [u8; 18] = [
    0x20, 0x03, 0x00, 0x00, 0x00, // CONNACK v5, no properties
    0x90, 0x04, 0x00, 0x01, 0x00, 0x01, // SUBACK id 1, granted QoS 1
    0x40, 0x04, 0x00, 0x02, 0x00, 0x00, // PUBACK id 2, success
    0xD0, // first byte of a PINGRESP that never completes
];

#[derive(Debug)]
struct Never;

impl core::fmt::Display for Never {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("never")
    }
}

impl core::error::Error for Never {}

impl embedded_io::Error for Never {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// Reads from [`BROKER`], discards writes (through `black_box`, so the
/// encoders are not optimized away).
struct Canned {
    at: usize,
}

impl ErrorType for Canned {
    type Error = Never;
}

impl Read for Canned {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Never> {
        let input = black_box(&BROKER[..]);
        let rest = input.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Canned {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Never> {
        black_box(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Never> {
        Ok(())
    }
}

#[entry]
fn main() -> ! {
    // `#[entry]` turns these into `&'static mut` buffers in .bss, as firmware keeps
    // them: zeroed by the reset handler, not by code in `main`.
    static mut RX: [u8; 512] = [0; 512];
    static mut TX: [u8; 512] = [0; 512];
    let mut io = Canned { at: 0 };
    let mut clock: u64 = 0;
    let Ok(builder) = ConfigBuilder::new(black_box("sensor-17")) else {
        halt()
    };
    let config = builder.keep_alive(30).build();
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(RX, TX));
    if client.connect(&mut io, clock).is_err() {
        halt()
    }
    let _ = client.subscribe(&mut io, &[("cmd/sensor-17/#", QoS::AtLeastOnce)], clock);
    let _ = client.publish(
        &mut io,
        "sensors/17/temp",
        black_box(b"21.5"),
        QoS::AtLeastOnce,
        &[("site", "north")],
        clock,
    );
    loop {
        clock += 1;
        match client.poll(&mut io, black_box(clock)) {
            Ok(Some(Event::Message(m))) => {
                black_box(m.payload);
            }
            Ok(Some(Event::Published { packet_id, .. })) => {
                black_box(packet_id);
            }
            Ok(_) => {}
            Err(_) => halt(),
        }
    }
}

fn halt() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    halt()
}
