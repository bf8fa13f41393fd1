from django.urls import path

from restore import views

urlpatterns = [
    path("", views.restore_list, name="restore_list"),
    path("<int:pk>/", views.restore_detail, name="restore_detail"),
]
