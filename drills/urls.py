from django.urls import path

from drills import views

urlpatterns = [
    path("", views.listing, name="drill_list"),
    path("sources/<int:pk>/", views.source_drills, name="drill_history"),
    path("sources/<int:pk>/schedule/", views.update_schedule, name="drill_schedule"),
    path("sources/<int:pk>/record/", views.record, name="drill_record"),
    path("sources/<int:pk>/run/<str:kind>/", views.run_now, name="drill_run"),
]
