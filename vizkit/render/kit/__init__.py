"""What every command's output uses: page primitives (``page``), the page-1 header (``first_page``), the provenance
block (``provenance``), array-to-picture helpers (``display``), the PDF writer (``pdf``) and the HTML shell
(``html``). A command's render module adds only its own pages."""
