"""Documents the tests generate themselves for the document pipeline: a real PDF invoice, a text receipt, a
contract and a resume, each with the class and fields the pipeline must find in it.

``pdf`` writes a minimal, valid PDF 1.4 file (one page per 50 lines, Helvetica, an xref table) that
``pypdf`` parses and extracts text from, so no PDF library is needed to make test data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LINES_PER_PAGE = 50


@dataclass(frozen=True)
class Document:
    """A file to upload and what the pipeline must make of it."""

    filename: str
    content_type: str
    data: bytes
    document_class: str
    fields: dict[str, Any] = field(default_factory=dict)
    """Fields extraction must return with exactly these values (others may be present)."""


def _escape(line: str) -> bytes:
    text = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return text.encode("cp1252", errors="replace")


def pdf(lines: list[str]) -> bytes:
    """A PDF whose pages show ``lines``, top to bottom."""
    pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)] or [[]]
    objects: list[bytes] = []
    font = 3 + 2 * len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    for i, page in enumerate(pages):
        stream = b"BT /F1 11 Tf 14 TL 56 780 Td " + b" T* ".join(b"(" + _escape(x) + b") Tj" for x in page)
        stream += b" ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def invoice_pdf(
    number: str = "INV-2024-0042",
    total: float = 1234.50,
    vendor: str = "Acme Supplies Ltd",
    customer: str = "Globex Corporation",
) -> Document:
    """A one-page PDF invoice; ``total`` is split over two lines so the lines add up."""
    first = round(total * 0.4, 2)
    second = round(total - first, 2)
    lines = [
        "INVOICE",
        f"Vendor: {vendor}",
        "12 Industrial Way, Springfield",
        f"Customer: {customer}",
        f"Invoice Number: {number}",
        "Invoice Date: 15 March 2024",
        "Due Date: 2024-04-14",
        "",
        "Description                          Amount",
        f"Widgets, 10 pieces                   ${first:,.2f}",
        f"Installation and consulting          ${second:,.2f}",
        f"Total: ${total:,.2f}",
        "Payment terms: 30 days. Please remit to account 12-3456-789.",
    ]
    return Document(
        filename=f"{number.lower()}.pdf",
        content_type="application/pdf",
        data=pdf(lines),
        document_class="invoice",
        fields={
            "invoice_number": number,
            "invoice_date": "2024-03-15",
            "due_date": "2024-04-14",
            "total": round(total, 2),
            "currency": "USD",
            "vendor": vendor,
            "customer": customer,
        },
    )


def receipt_text() -> Document:
    """A shop receipt as plain text."""
    text = "\n".join(
        [
            "CORNER COFFEE CO.",
            "123 Main Street, Springfield",
            "Receipt #4471",
            "Date: 2024-02-03 14:22",
            "Cashier: Sam",
            "Cappuccino            4.50",
            "Croissant             3.20",
            "Subtotal: 7.70",
            "Tax: 0.62",
            "Total: $8.32",
            "Paid by card ending 4242",
            "Thank you for your purchase!",
        ]
    )
    return Document(
        filename="receipt-4471.txt",
        content_type="text/plain",
        data=text.encode(),
        document_class="receipt",
        fields={"merchant": "CORNER COFFEE CO.", "date": "2024-02-03", "total": 8.32, "currency": "USD"},
    )


def contract_text() -> Document:
    """A short services agreement as plain text."""
    text = "\n".join(
        [
            "SERVICES AGREEMENT",
            'This Services Agreement (the "Agreement") is entered into as of January 1, 2024 (the',
            '"Effective Date") by and between Initech LLC ("Provider") and Umbrella Corp ("Client").',
            "WHEREAS the Client wishes to engage the Provider, the parties hereby agree as follows:",
            "1. Term. This Agreement shall remain in effect for a term of 12 months from the Effective Date.",
            "2. Termination. Either party may terminate this Agreement with 30 days written notice.",
            "3. Governing Law. This Agreement shall be governed by the laws of the State of New York.",
            "Signature: ____________________",
        ]
    )
    return Document(
        filename="services-agreement.txt",
        content_type="text/plain",
        data=text.encode(),
        document_class="contract",
        fields={
            "parties": ["Initech LLC", "Umbrella Corp"],
            "effective_date": "2024-01-01",
            "term": "12 months",
            "term_months": 12,
            "governing_law": "the State of New York",
        },
    )


def resume_pdf() -> Document:
    """A resume as a PDF."""
    lines = [
        "Jane Doe",
        "Email: jane.doe@example.com",
        "Phone: +1 555 123 4567",
        "",
        "Experience",
        "Senior Software Engineer, Initech (2019 - 2024)",
        "Software Engineer, Globex (2015 - 2019)",
        "",
        "Education",
        "BSc Computer Science, State University",
        "",
        "Skills: Python, SQL, Kubernetes, Machine Learning",
    ]
    return Document(
        filename="jane-doe.pdf",
        content_type="application/pdf",
        data=pdf(lines),
        document_class="resume",
        fields={
            "name": "Jane Doe",
            "email": "jane.doe@example.com",
            "skills": ["Python", "SQL", "Kubernetes", "Machine Learning"],
        },
    )


def other_text() -> Document:
    """Something that is none of the four classes."""
    text = "Team lunch on Friday at noon in the garden. Bring a dish to share."
    return Document("lunch.txt", "text/plain", text.encode(), "other", {})


def all_documents() -> list[Document]:
    """One of each class."""
    return [invoice_pdf(), receipt_text(), contract_text(), resume_pdf(), other_text()]
