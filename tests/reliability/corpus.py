"""Names and chores the reliability suites write into documents, so each line is a task."""

from __future__ import annotations

PEOPLE = ["Luis", "Priya", "Dana", "Marco", "Aiko", "Sam", "Noor", "Jonas"]
CHORES = [
    "send the revised homepage mockups", "book the photographer for the product shoot",
    "update the pricing table on the services page", "review the accessibility audit",
    "migrate the old blog posts to the new CMS", "prepare the invoice for the retainer",
    "confirm the launch date with the client", "fix the contact form on mobile",
    "draft the newsletter for the spring campaign", "order the printed menus",
    "renew the TLS certificate for the shop domain", "collect three customer testimonials",
    "write alt text for the gallery images", "set up the staging server",
    "export the analytics report for March", "schedule the usability test sessions",
]
