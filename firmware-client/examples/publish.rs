//! Connects to a broker, publishes one QoS 1 reading with user properties and
//! waits for its PUBACK.
//!
//! ```sh
//! cargo run -p tern-client --features std --example publish -- 127.0.0.1:1883
//! ```

use std::time::{Duration, Instant};

use tern_client::{Buffers, Client, ConfigBuilder, Event, QoS, TcpTransport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".to_string());
    let start = Instant::now();
    let now = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);

    let config = ConfigBuilder::new("example-sensor")?.keep_alive(30).build();
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = TcpTransport::connect(addr.as_str())?;
    io.set_read_timeout(Some(Duration::from_millis(100)))?;

    let info = client.connect(&mut io, now())?;
    println!("connected (session present: {})", info.session_present);
    let id = client.publish(
        &mut io,
        "sensors/example/temperature",
        b"21.5",
        QoS::AtLeastOnce,
        &[("site", "north"), ("kind", "temperature")],
        now(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(Event::Published { packet_id, reason }) = client.poll(&mut io, now())?
            && packet_id == id
        {
            println!("acknowledged: {reason:?}");
            client.disconnect(&mut io)?;
            return Ok(());
        }
    }
    Err("no PUBACK within 5 s".into())
}
