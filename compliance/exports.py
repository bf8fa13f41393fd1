"""The compliance report as files: CSV for a spreadsheet, PDF for the record.
Both render the Report that compliance.report.build() returns, nothing else."""

import io
from xml.sax.saxutils import escape

from catalog import spreadsheets
from catalog.text import moment_text
from compliance.report import Report, Section


def to_csv(report: Report) -> str:
    """One file, one table: the first column names the section; each section
    starts with its column names and ends with a blank line."""
    out = io.StringIO()
    # A source named =HYPERLINK(…) stays text in a spreadsheet (catalog/spreadsheets.py).
    writer = spreadsheets.writer(out)
    writer.writerow(["Section", "Item", "Value"])
    writer.writerow(["Report", "Period", report.period_text()])
    writer.writerow(["Report", "Sources", report.sources_text()])
    writer.writerow(["Report", "Generated", moment_text(report.generated_at)])
    for section in report.sections:
        writer.writerow([])
        writer.writerow([section.title, *section.columns])
        for row in section.rows:
            writer.writerow([section.title, *row])
        for sentence in section.summary:
            writer.writerow([section.title, "Summary", sentence])
    return out.getvalue()


def to_pdf(report: Report) -> bytes:
    """Title, period, sources and every section as a table, A4 landscape."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    cell = styles["BodyText"].clone("cell", fontSize=8, leading=10)
    head = cell.clone("head", fontName="Helvetica-Bold")
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title="Strongroom compliance report",
        author="Strongroom",
    )
    story = [
        Paragraph("Strongroom compliance report", styles["Title"]),
        Paragraph(f"<b>Period:</b> {report.period_text()}", styles["Normal"]),
        Paragraph(f"<b>Sources:</b> {escape(report.sources_text())}", styles["Normal"]),
        Paragraph(f"<b>Generated:</b> {moment_text(report.generated_at)}", styles["Normal"]),
    ]
    for number, section in enumerate(report.sections, 1):
        story += [
            Spacer(1, 6 * mm),
            Paragraph(f"{number}. {escape(section.title)}", styles["Heading2"]),
            Paragraph(escape(section.meaning), styles["Italic"]),
        ]
        story += [Paragraph(escape(sentence), styles["Normal"]) for sentence in section.summary]
        if not section.rows:
            story.append(Paragraph("Nothing in this period.", styles["Normal"]))
            continue
        data = [[Paragraph(escape(str(c)), head) for c in section.columns]]
        data += [[Paragraph(escape(str(value)), cell) for value in row] for row in section.rows]
        table = Table(data, colWidths=column_widths(section, document.width), repeatRows=1, hAlign="LEFT")
        style = [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#c8ccd4")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef0f3")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        style += [
            ("BACKGROUND", (0, i), (-1, i), colors.HexColor("#fdeceb"))
            for i, flagged in enumerate(section.flagged, 1)
            if flagged
        ]
        table.setStyle(TableStyle(style))
        story += [Spacer(1, 2 * mm), table]
    document.build(story)
    return buffer.getvalue()


def column_widths(section: Section, total: float) -> list[float]:
    """Shares of the page width by the longest text in each column (capped, so
    that one long reason does not squeeze the dates)."""
    longest = [
        min(max([len(str(column))] + [len(str(row[i])) for row in section.rows]), 60) + 4
        for i, column in enumerate(section.columns)
    ]
    return [total * length / sum(longest) for length in longest]
