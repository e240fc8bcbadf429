-- Sample data for the demo helpdesk. Password hashes are fake and never leave rowcast.
INSERT INTO users (email, name, role, password_hash) VALUES
  ('ada@helpdesk.example',   'Ada Agent',     'agent',    '$argon2id$v=19$demo-ada'),
  ('root@helpdesk.example',  'Remy Admin',    'admin',    '$argon2id$v=19$demo-remy'),
  ('carl@customer.example',  'Carl Customer', 'customer', '$argon2id$v=19$demo-carl'),
  ('cleo@customer.example',  'Cleo Customer', 'customer', '$argon2id$v=19$demo-cleo');
INSERT INTO tickets (subject, body, status, priority, requester_id, assignee_id) VALUES
  ('Cannot log in after password reset', 'The reset link says it expired.', 'open', 'high', 3, 1),
  ('Invoice shows the wrong VAT number', 'Our VAT id changed in March.', 'pending', 'normal', 4, 1),
  ('Feature request: dark mode', 'Please!', 'open', 'low', 3, NULL);
INSERT INTO comments (ticket_id, author_id, body) VALUES
  (1, 1, 'Could you try again? I re-issued the link.'),
  (2, 4, 'Attached the new registration certificate.');
INSERT INTO kb_articles (title, body, published, author_id) VALUES
  ('Resetting your password', 'Open Settings → Security → Reset.', true, 1),
  ('Updating billing details', 'Billing → Company details.', true, 2);
INSERT INTO attachments (ticket_id, comment_id, filename, content_type, size_bytes) VALUES
  (2, 2, 'registration.pdf', 'application/pdf', 48211);
INSERT INTO notifications (user_id, type, message, related_id, related_type) VALUES
  (3, 'comment_on_ticket', 'Ada replied to "Cannot log in after password reset"', '1', 'comment');
