"""The HTML report: collecting what it shows, rendering it, and the plots it embeds."""
