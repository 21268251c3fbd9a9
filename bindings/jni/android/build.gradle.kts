// Android library module for the suanpan Kotlin API. Not built in this repository's CI
// (no Android SDK/NDK there): ../build-aar.sh cross-compiles libsuanpan_jni.so into
// src/main/jniLibs/<abi>/ and then runs this build (or packs the AAR by hand).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "io.suanpan"
    compileSdk = 34
    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    // src/test/kotlin is the desktop-JVM test run by bindings/jni/tests/jvm.rs, not a
    // Gradle unit test (it needs the host build of the native library and the model).
    sourceSets["test"].kotlin.srcDirs(emptyList<String>())
}

dependencies {
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.1")
}
