//! The demo's gentle workload: ticket updates, comments with notifications, new tickets,
//! knowledge-base edits, at a pace a person can follow in the console.

use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use tokio_util::sync::CancellationToken;

/// A gentle helpdesk: ticket updates, comments with notifications, new tickets, kb edits.
pub(super) async fn drive(
    mut client: tokio_postgres::Client,
    stop: CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    const SUBJECTS: &[&str] = &[
        "Export to CSV times out",
        "Two-factor codes arrive late",
        "Cannot upload a 30 MB attachment",
        "Wrong time zone on invoices",
        "Search ignores accents",
    ];
    const REPLIES: &[&str] = &[
        "Thanks, we are looking into it.",
        "Could you send a screenshot?",
        "A fix ships tomorrow.",
        "Does it still happen after clearing the cache?",
    ];
    const STATUSES: &[&str] = &["open", "pending", "solved"];
    let mut tick: u64 = 0;
    loop {
        let pause = Duration::from_millis(rand::rng().random_range(800..2000));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        tick += 1;
        let roll: u32 = rand::rng().random_range(0..10);
        match roll {
            0..=3 => {
                let status = *STATUSES.choose(&mut rand::rng()).unwrap_or(&"open");
                client
                    .execute(
                        "UPDATE tickets SET status = $1, updated_at = now()
                          WHERE id = (SELECT id FROM tickets ORDER BY random() LIMIT 1)",
                        &[&status],
                    )
                    .await?;
            }
            4..=6 => {
                let body = *REPLIES.choose(&mut rand::rng()).unwrap_or(&"Thanks!");
                let tx = client.transaction().await?;
                let row = tx
                    .query_one(
                        "INSERT INTO comments (ticket_id, author_id, body)
                         SELECT id, 1, $1 FROM tickets ORDER BY random() LIMIT 1
                         RETURNING id, ticket_id",
                        &[&body],
                    )
                    .await?;
                let comment_id: i64 = row.get(0);
                let ticket_id: i64 = row.get(1);
                tx.execute(
                        "INSERT INTO notifications (user_id, type, message, related_id, related_type)
                         SELECT requester_id, 'comment_on_ticket', 'Ada replied to \"' || subject || '\"', $1::text, 'comment'
                           FROM tickets WHERE id = $2",
                        &[&comment_id.to_string(), &ticket_id],
                    )
                    .await?;
                tx.commit().await?;
            }
            7 => {
                let subject = *SUBJECTS.choose(&mut rand::rng()).unwrap_or(&"Help");
                client
                    .execute(
                        "INSERT INTO tickets (subject, body, requester_id) VALUES ($1, 'Reported via the demo', $2)",
                        &[&subject, &(3 + (tick % 2) as i64)],
                    )
                    .await?;
            }
            8 => {
                client
                    .execute(
                        "UPDATE kb_articles SET body = body || ' (updated)', updated_at = now()
                          WHERE id = (SELECT id FROM kb_articles ORDER BY random() LIMIT 1)",
                        &[],
                    )
                    .await?;
            }
            _ => {
                client
                    .execute("UPDATE users SET updated_at = now() WHERE id = 1", &[])
                    .await?;
            }
        }
    }
}
