pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "suanpan-sample"
include(":app")

// The suanpan Kotlin API, built from source: the Android library module of bindings/jni.
// Its jniLibs/<abi>/libsuanpan_jni.so come from `bindings/jni/build-aar.sh --jnilibs-only`
// (README.md).
include(":suanpan")
project(":suanpan").projectDir = file("../../bindings/jni/android")
