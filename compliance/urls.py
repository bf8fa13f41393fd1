from django.urls import path

from compliance import views

urlpatterns = [
    path("", views.report_page, name="compliance_report"),
    path("report.csv", views.download, {"kind": "csv"}, name="compliance_report_csv"),
    path("report.pdf", views.download, {"kind": "pdf"}, name="compliance_report_pdf"),
]
