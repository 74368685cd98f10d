"""The chapters' helpers (`article`, `background`, `practice`, `faq`, `claims`), the exercises (`exercises/chNN`),
their marking (`check`) and the teacher's copies (`teach`). They use everything; nothing else imports them."""
